//go:build !linux

package tunnel

import "errors"

func lockLowered(int) int     { return 0 }
func unlockRestored(int) bool { return true }
func canRestorePriority(int) error {
	return errors.New("thread priorities are only supported on Linux")
}
