package certs

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File modes. Keys are private to the owner; certificates are public.
const (
	keyFileMode  fs.FileMode = 0o600
	certFileMode fs.FileMode = 0o644
	dirMode      fs.FileMode = 0o700
)

// File names inside a certificate directory.
const (
	certExt = ".crt"
	keyExt  = ".key"
)

// CAFiles returns the paths of the CA certificate and key in dir.
func CAFiles(dir string) (certFile, keyFile string) {
	return LeafFiles(dir, caBaseName)
}

// LeafFiles returns the paths of the certificate and key named name in dir.
func LeafFiles(dir, name string) (certFile, keyFile string) {
	return filepath.Join(dir, name+certExt), filepath.Join(dir, name+keyExt)
}

// WriteCA writes ca to dir/ca.crt (0644) and dir/ca.key (0600), creating dir
// with mode 0700 if it is missing. Unless overwrite is set it refuses to
// replace an existing CA certificate or key, and the error, which wraps
// fs.ErrExist, names the file: replacing a CA invalidates every certificate
// it issued.
func WriteCA(dir string, ca *CA, overwrite bool) error {
	if err := ca.check(); err != nil {
		return fmt.Errorf("write CA to %s: %w", dir, err)
	}
	certFile, keyFile := CAFiles(dir)
	if !overwrite {
		for _, f := range []string{keyFile, certFile} {
			if _, err := os.Lstat(f); err == nil {
				return fmt.Errorf("write CA: %s: %w; refusing to replace an existing CA", f, fs.ErrExist)
			}
		}
	}
	if err := writePair(dir, certFile, keyFile, ca.Cert, ca.Key, overwrite); err != nil {
		return fmt.Errorf("write CA: %w", err)
	}
	return nil
}

// WriteLeaf writes l to dir/NAME.crt (0644) and dir/NAME.key (0600),
// replacing any previous pair of that name (renewal), creating dir with
// mode 0700 if it is missing. name must pass ValidateFileName.
func WriteLeaf(dir, name string, l *Leaf) error {
	if err := ValidateFileName(name); err != nil {
		return fmt.Errorf("write certificate: %w", err)
	}
	if l == nil || l.Cert == nil || l.Key == nil {
		return fmt.Errorf("write certificate %q: certificate or key is missing", name)
	}
	certFile, keyFile := LeafFiles(dir, name)
	if err := writePair(dir, certFile, keyFile, l.Cert, l.Key, true); err != nil {
		return fmt.Errorf("write certificate %q: %w", name, err)
	}
	return nil
}

// writePair writes the key before the certificate: a reader that sees the
// new certificate then finds the new key too, unless it raced the second
// rename, in which case it reports ErrKeyMismatch and can retry.
func writePair(dir, certFile, keyFile string, cert *x509.Certificate, key crypto.Signer, overwrite bool) error {
	keyPEM, err := EncodeKeyPEM(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	if err := writeFileAtomic(keyFile, keyPEM, keyFileMode, overwrite); err != nil {
		return err
	}
	if err := writeFileAtomic(certFile, EncodeCertPEM(cert), certFileMode, overwrite); err != nil {
		if !overwrite {
			// We created keyFile a moment ago; do not leave half a pair.
			_ = os.Remove(keyFile)
		}
		return err
	}
	return nil
}

// LoadCA reads dir/ca.crt and dir/ca.key and checks that the certificate is
// a CA and that the key belongs to it.
func LoadCA(dir string) (*CA, error) {
	certFile, keyFile := CAFiles(dir)
	pair, err := LoadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	if !pair.Leaf.BasicConstraintsValid || !pair.Leaf.IsCA {
		return nil, fmt.Errorf("load CA: certificate %q in %q: %w", Identity(pair.Leaf), certFile, ErrNotCA)
	}
	// LoadKeyPair only returns keys that are crypto.Signers.
	return &CA{Cert: pair.Leaf, Key: pair.PrivateKey.(crypto.Signer)}, nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, so that readers see the old content or the new, never a part.
// os.CreateTemp creates the file with mode 0600, so a key is never readable
// by others, even for a moment; other modes are set before the file gets
// its final name. Without overwrite the final step is a hard link, which,
// unlike rename, fails if path exists, closing the race with a concurrent
// writer.
func writeFileAtomic(path string, data []byte, mode fs.FileMode, overwrite bool) (err error) {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if mode != keyFileMode {
		if err := f.Chmod(mode); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write %s: sync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: close: %w", path, err)
	}
	if overwrite {
		err = os.Rename(tmp, path)
	} else if err = os.Link(tmp, path); err == nil {
		_ = os.Remove(tmp)
	}
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("write %s: %w", path, fs.ErrExist)
		}
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir makes a rename in dir durable across a crash.
func syncDir(dir string) error {
	if dir == "" {
		dir = "."
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
