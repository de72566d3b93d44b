// Package filetest reads and writes files for tests and fails the test on an
// error, so that a test never goes on with a file it did not read or write
// (a check over the zero value of a failed read passes on nothing). Named
// like the standard library's httptest and iotest; only tests import it.
package filetest

import (
	"bytes"
	"image"
	"image/png"
	"os"
	"testing"
)

// Read returns the content of path or fails the test.
func Read(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Write writes b to path (mode 0644) or fails the test.
func Write(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// WritePNG encodes img as a PNG file at path or fails the test.
func WritePNG(t testing.TB, path string, img image.Image) {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	Write(t, path, b.Bytes())
}
