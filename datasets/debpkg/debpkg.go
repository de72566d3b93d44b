// Package debpkg fetches a pinned Debian package and takes chosen files out of
// it, without dpkg and without unpacking the rest: a .deb is an ar archive
// whose data member is a tar (xz, gzip or uncompressed). The photo set's
// photographs come this way, checked against the archive's SHA-256.
package debpkg

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ulikunitz/xz"

	"github.com/diad-project/diad/backend/atomicfile"
)

// MaxMember bounds one extracted file, so a malformed archive cannot fill the disk.
const MaxMember = 256 << 20

// Fetch downloads url, checks its SHA-256 against sum (hex), and writes the
// wanted files of its data archive under dest (keeping their paths). Files
// already present are not fetched again. It fails if any wanted file is missing.
func Fetch(ctx context.Context, url, sum string, want []string, dest string) (err error) {
	missing := false
	for _, w := range want {
		if _, err := os.Stat(filepath.Join(dest, filepath.FromSlash(w))); err != nil {
			missing = true
		}
	}
	if !missing {
		return nil
	}
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	tmp, err := os.CreateTemp(dest, ".download-*.deb")
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	defer func() {
		if cerr := resp.Body.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("fetch %s: %w", url, cerr)
		}
	}()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch %s: %s", url, resp.Status)
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), resp.Body); err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != strings.ToLower(sum) {
		return fmt.Errorf("fetch %s: SHA-256 %s, want %s (a changed or corrupt download)", url, got, sum)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	if err := Extract(bufio.NewReader(tmp), want, dest); err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	return nil
}

// Extract reads a .deb from r and writes the wanted files of its data archive
// under dest. Paths are package paths such as "usr/share/doc/x/copyright".
func Extract(r io.Reader, want []string, dest string) error {
	wanted := map[string]bool{}
	for _, w := range want {
		wanted[path.Clean(strings.TrimPrefix(w, "/"))] = false
	}
	data, name, err := dataMember(r)
	if err != nil {
		return err
	}
	tr, err := decompress(data, name)
	if err != nil {
		return err
	}
	t := tar.NewReader(tr)
	for {
		hdr, err := t.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("deb %s: %w", name, err)
		}
		p := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		done, ok := wanted[p]
		if !ok || done || hdr.Typeflag != tar.TypeReg {
			continue
		}
		if hdr.Size > MaxMember {
			return fmt.Errorf("deb: %s is %d bytes, more than %d", p, hdr.Size, MaxMember)
		}
		if err := writeFile(filepath.Join(dest, filepath.FromSlash(p)), io.LimitReader(t, hdr.Size)); err != nil {
			return err
		}
		wanted[p] = true
	}
	var absent []string
	for p, done := range wanted {
		if !done {
			absent = append(absent, p)
		}
	}
	if len(absent) > 0 {
		return fmt.Errorf("deb: not in the package: %s", strings.Join(absent, ", "))
	}
	return nil
}

// dataMember walks the ar archive to its data.tar.* member.
func dataMember(r io.Reader) (io.Reader, string, error) {
	magic := make([]byte, 8)
	if _, err := io.ReadFull(r, magic); err != nil {
		return nil, "", fmt.Errorf("deb: %w", err)
	}
	if string(magic) != "!<arch>\n" {
		return nil, "", fmt.Errorf("deb: not an ar archive")
	}
	hdr := make([]byte, 60)
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, "", fmt.Errorf("deb: no data.tar member")
			}
			return nil, "", fmt.Errorf("deb: %w", err)
		}
		if hdr[58] != '`' || hdr[59] != '\n' {
			return nil, "", fmt.Errorf("deb: bad ar member header")
		}
		name := strings.TrimSuffix(strings.TrimSpace(string(hdr[:16])), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 {
			return nil, "", fmt.Errorf("deb: bad size in ar member %q", name)
		}
		if strings.HasPrefix(name, "data.tar") {
			return io.LimitReader(r, size), name, nil
		}
		// members are padded to an even length
		if _, err := io.CopyN(io.Discard, r, size+size%2); err != nil {
			return nil, "", fmt.Errorf("deb: member %q: %w", name, err)
		}
	}
}

func decompress(r io.Reader, name string) (io.Reader, error) {
	switch name {
	case "data.tar":
		return r, nil
	case "data.tar.gz":
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("deb %s: %w", name, err)
		}
		return z, nil
	case "data.tar.xz":
		z, err := xz.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("deb %s: %w", name, err)
		}
		return z, nil
	}
	return nil, fmt.Errorf("deb: unsupported data member %q", name)
}

func writeFile(p string, r io.Reader) error {
	err := atomicfile.Write(p, func(w io.Writer) error {
		_, err := io.Copy(w, r)
		return err
	})
	if err != nil {
		return fmt.Errorf("deb: %s: %w", p, err)
	}
	return nil
}
