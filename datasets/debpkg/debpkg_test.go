package debpkg

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ulikunitz/xz"
)

// makeDeb builds a .deb: debian-binary, a control member and data.tar.xz
// holding files (path -> content).
func makeDeb(t testing.TB, files map[string]string) []byte {
	t.Helper()
	var data bytes.Buffer
	zw, err := xz.NewWriter(&data)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: "./usr/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: "./" + name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	var deb bytes.Buffer
	deb.WriteString("!<arch>\n")
	member := func(name string, body []byte) {
		fmt.Fprintf(&deb, "%-16s%-12s%-6s%-6s%-8s%-10d`\n", name, "0", "0", "0", "100644", len(body))
		deb.Write(body)
		if len(body)%2 == 1 {
			deb.WriteByte('\n')
		}
	}
	member("debian-binary", []byte("2.0\n"))
	member("control.tar.gz", []byte("not read, odd length"))
	member("data.tar.xz", data.Bytes())
	return deb.Bytes()
}

func TestExtractTakesOnlyWhatIsAsked(t *testing.T) {
	deb := makeDeb(t, map[string]string{"usr/share/a.jpg": "photo a", "usr/share/b.png": "photo b", "usr/share/doc/x/copyright": "licence"})
	dest := t.TempDir()
	if err := Extract(bytes.NewReader(deb), []string{"usr/share/a.jpg", "/usr/share/doc/x/copyright"}, dest); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"usr/share/a.jpg": "photo a", "usr/share/doc/x/copyright": "licence"} {
		got, err := os.ReadFile(filepath.Join(dest, name))
		if err != nil || string(got) != want {
			t.Fatalf("%s: %q, %v", name, got, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dest, "usr/share/b.png")); err == nil {
		t.Fatal("b.png was not asked for but was written")
	}
	err := Extract(bytes.NewReader(deb), []string{"usr/share/missing.jpg"}, t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "missing.jpg") {
		t.Fatalf("a missing file: %v", err)
	}
	for name, bad := range map[string][]byte{
		"not ar":    []byte("PK\x03\x04 a zip"),
		"truncated": deb[:200],
		"empty":     nil,
	} {
		if err := Extract(bytes.NewReader(bad), []string{"usr/share/a.jpg"}, t.TempDir()); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestFetchChecksTheHash(t *testing.T) {
	deb := makeDeb(t, map[string]string{"usr/share/a.jpg": "photo a"})
	requests := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests++
		if r.URL.Path != "/pool/x.deb" {
			http.NotFound(w, r)
			return
		}
		if _, err := w.Write(deb); err != nil {
			t.Errorf("serve: %v", err)
		}
	}))
	defer srv.Close()
	sum := sha256.Sum256(deb)
	good := hex.EncodeToString(sum[:])
	dest := t.TempDir()
	want := []string{"usr/share/a.jpg"}

	if err := Fetch(context.Background(), srv.URL+"/pool/x.deb", strings.Repeat("0", 64), want, dest); err == nil || !strings.Contains(err.Error(), "SHA-256") {
		t.Fatalf("wrong hash: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dest, want[0])); err == nil {
		t.Fatal("a download with the wrong hash was unpacked")
	}
	if err := Fetch(context.Background(), srv.URL+"/pool/gone.deb", good, want, dest); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("missing package: %v", err)
	}
	if err := Fetch(context.Background(), srv.URL+"/pool/x.deb", good, want, dest); err != nil {
		t.Fatal(err)
	}
	before := requests
	if err := Fetch(context.Background(), srv.URL+"/pool/x.deb", good, want, dest); err != nil {
		t.Fatal(err)
	}
	if requests != before {
		t.Fatal("files already present were fetched again")
	}
	left, err := filepath.Glob(filepath.Join(dest, ".download-*"))
	if err != nil || len(left) != 0 {
		t.Fatalf("downloads left behind: %v %v", left, err)
	}
}

// Extract reads archives from outside: any bytes give a result or an error.
func FuzzExtract(f *testing.F) {
	f.Add(makeDeb(f, map[string]string{"usr/a": "x"}))
	f.Add([]byte("!<arch>\n"))
	f.Add([]byte("!<arch>\ndata.tar        0           0     0     100644  99999999  `\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		dest := t.TempDir()
		if err := Extract(bytes.NewReader(b), []string{"usr/a"}, dest); err != nil {
			return // refused: what it must do with most inputs
		}
		if _, err := os.Stat(filepath.Join(dest, "usr/a")); err != nil {
			t.Fatalf("Extract succeeded without writing the file: %v", err)
		}
	})
}
