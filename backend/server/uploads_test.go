package server

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"image"
	"image/jpeg"
	"image/png"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/shared"
)

func upload(t testing.TB, e *env, data []byte) shared.Upload {
	t.Helper()
	r, body := e.do(t, "POST", "/api/v1/uploads", data, "Content-Type", "image/png")
	var u shared.Upload
	if r.StatusCode != http.StatusCreated || json.Unmarshal(body, &u) != nil {
		t.Fatalf("upload: %d %s", r.StatusCode, body)
	}
	return u
}

// Uploads are bounded by the memory they decode to, by how many decode at
// once, and by size in multipart form too; what is stored is the original file.
func TestUploadResourceLimits(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.UploadDecodes, c.UploadWait = 1, time.Millisecond })
	// A header that claims 4096x4096 16-bit RGBA: within the pixel limit,
	// but 128 MiB decoded. Refused before decoding.
	ihdr := []byte("IHDR\x00\x00\x10\x00\x00\x00\x10\x00\x10\x06\x00\x00\x00")
	deep := append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0d"), ihdr...)
	deep = binary.BigEndian.AppendUint32(deep, crc32.ChecksumIEEE(ihdr))
	if r, body := e.do(t, "POST", "/api/v1/uploads", deep); r.StatusCode != http.StatusRequestEntityTooLarge || !bytes.Contains(body, []byte("decode to")) {
		t.Fatalf("16-bit 4096x4096: %d %s", r.StatusCode, body)
	}
	// Multipart over the byte limit: 413, as for a raw body.
	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	fw, err := w.CreateFormFile("image", "big.png")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.Write(bytes.Repeat([]byte{0}, int(e.srv.cfg.MaxUploadBytes)+2<<20)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if r, body := e.do(t, "POST", "/api/v1/uploads", mp.Bytes(), "Content-Type", w.FormDataContentType()); r.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversize multipart: %d %s", r.StatusCode, body)
	}
	// The original bytes are kept: a JPEG stays the same JPEG.
	img := image.NewRGBA(image.Rect(0, 0, 40, 30))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 7)
	}
	var jb bytes.Buffer
	if err := jpeg.Encode(&jb, img, nil); err != nil {
		t.Fatal(err)
	}
	up := upload(t, e, jb.Bytes())
	path, err := e.srv.uploadPath(up.ID)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(stored, jb.Bytes()) || up.Format != "jpeg" {
		t.Fatalf("stored %d bytes (%v), uploaded %d, format %s", len(stored), err, jb.Len(), up.Format)
	}
	concurrentUploads(t, e)
	e.alive(t)
}

// concurrentUploads: with one decode at a time and no waiting, of many
// large uploads at once some are turned away with 503 and Retry-After, and
// none fails otherwise.
func concurrentUploads(t *testing.T, e *env) {
	big := image.NewRGBA(image.Rect(0, 0, 1400, 1400))
	for i := range big.Pix {
		big.Pix[i] = byte(i * 31 % 251)
	}
	var bb bytes.Buffer
	if err := png.Encode(&bb, big); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	codes := map[int]int{}
	retryAfter := true
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := http.NewRequest("POST", e.base+"/api/v1/uploads", bytes.NewReader(bb.Bytes()))
			if err != nil {
				t.Error(err)
				return
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			if err := resp.Body.Close(); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			codes[resp.StatusCode]++
			if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
				retryAfter = false
			}
		}()
	}
	wg.Wait()
	if codes[http.StatusServiceUnavailable] == 0 || codes[http.StatusCreated] == 0 || codes[http.StatusCreated]+codes[http.StatusServiceUnavailable] != 8 || !retryAfter {
		t.Fatalf("concurrent uploads: status counts %v (Retry-After on every 503: %v)", codes, retryAfter)
	}
}

// Uploads expire by age at start and by total size after each upload,
// oldest first; the upload just made stays.
func TestUploadsExpire(t *testing.T) {
	dataDir := t.TempDir()
	dir := filepath.Join(dataDir, "uploads")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	write := func(name string, size int, age time.Duration) string {
		p := filepath.Join(dir, name)
		filetest.Write(t, p, make([]byte, size))
		if err := os.Chtimes(p, now.Add(-age), now.Add(-age)); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ancient := write("u-00000000000000aa.img", 10, 30*24*time.Hour)
	older := write("u-00000000000000bb.img", 50<<10, 2*time.Hour)
	newer := write("u-00000000000000cc.img", 50<<10, time.Hour)
	other := write("notes.txt", 10, 30*24*time.Hour)
	e := startEnv(t, func(c *Config) {
		c.DataDir = dataDir
		c.UploadMaxAge = 7 * 24 * time.Hour
		c.UploadMaxTotal = 100 << 10
	})
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
	if exists(ancient) || !exists(older) || !exists(newer) || !exists(other) {
		t.Fatalf("after start: ancient %v older %v newer %v other %v", exists(ancient), exists(older), exists(newer), exists(other))
	}
	// Any upload takes the total over 100 KiB: the oldest goes.
	img := image.NewRGBA(image.Rect(0, 0, 100, 100))
	for i := range img.Pix {
		img.Pix[i] = byte(i * 13 % 251)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	up := upload(t, e, b.Bytes())
	if _, err := e.srv.uploadPath(up.ID); err != nil {
		t.Fatalf("the new upload was removed: %v", err)
	}
	if exists(older) || !exists(newer) {
		t.Fatalf("after the upload (%d bytes): older %v newer %v", b.Len(), exists(older), exists(newer))
	}
}

// TestUploadPeakRSSIsBounded: sixteen uploads at once, each decoding to
// 61 MiB (4000x4000 RGBA, ~250 KB as PNG), raise the server's peak RSS by
// at most the bound docs/api.md states: UploadDecodes x 2 x the decoded size
// (the decoder's image and its working rows), plus 64 MiB.
func TestUploadPeakRSSIsBounded(t *testing.T) {
	e := startEnv(t, nil)
	img := image.NewRGBA(image.Rect(0, 0, 4000, 4000))
	for i := range img.Pix {
		img.Pix[i] = byte(i / 4096)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	img = nil
	decoded := int64(4000 * 4000 * 4)
	if decoded > e.srv.cfg.MaxUploadDecodedBytes {
		t.Fatalf("the test image (%d bytes decoded) is over the limit it means to stay under", decoded)
	}
	torchrt.TrimHeap()
	base := torchrt.RSSMiB()
	if err := torchrt.ResetPeakRSS(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(e.base+"/api/v1/uploads", "image/png", bytes.NewReader(b.Bytes()))
			if err != nil {
				t.Error(err)
				return
			}
			if err := resp.Body.Close(); err != nil {
				t.Error(err)
			}
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	growth := torchrt.PeakRSSMiB() - base
	bound := float64(int64(e.srv.cfg.UploadDecodes)*2*decoded)/(1<<20) + 64
	t.Logf("16 uploads of %d KB (%d MiB decoded): statuses %v; peak RSS %.0f MiB over the %.0f MiB before (bound %.0f)",
		b.Len()>>10, decoded>>20, codes, growth, base, bound)
	if codes[http.StatusCreated] == 0 || codes[http.StatusCreated]+codes[http.StatusServiceUnavailable] != 16 {
		t.Fatalf("statuses %v", codes)
	}
	if growth > bound {
		t.Fatalf("peak RSS grew by %.0f MiB, over the bound of %.0f MiB", growth, bound)
	}
}
