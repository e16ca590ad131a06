//go:build !linux

package integration

import "errors"

// enterNetns exists only on Linux; newNetnsPair skips elsewhere before
// anything calls it.
func enterNetns(path string, fn func() error) error {
	return errors.New("network namespaces are Linux-only")
}
