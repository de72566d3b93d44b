package server

import (
	"bytes"
	"context"
	"image/color"
	"image/gif"
	"image/png"
	"math"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/storyboard"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/shared"
)

// steerModel rewrites the checkpoint at path with a UNet as if trained and
// an SG network that steers it: a fresh model's zero-initialised output and
// control convolutions make guided and unguided denoising identical.
func steerModel(t *testing.T, path string) {
	t.Helper()
	err := torchrt.Do(func() error {
		m, _, err := model.Open(path, gotch.CPU)
		if err != nil {
			return err
		}
		defer m.Free()
		torchrt.NoGrad(func() {
			torchrt.ManualSeed(5)
			for _, p := range m.Store.Params() {
				if strings.HasPrefix(p.Name, model.PrefixUNet) && !p.Buffer {
					torchrt.Uniform_(p.Tensor, -0.2, 0.2)
				}
			}
			torchrt.Fill_(m.Store.Get(model.PrefixSG+"middle_block_out.0.bias").Tensor, 0.5)
		})
		return m.Save(path, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A denoise request with guidance "none" runs the same image, seed and
// sampler with the SG network switched off; every frame says which variant
// it belongs to, the timesteps are the same, the pictures are not.
func TestDenoiseWithoutGuidanceShowsWhatTheSGNetworkAdds(t *testing.T) {
	e := startEnv(t, nil)
	steerModel(t, e.model)
	src := filepath.Join("woven", "test", "good", "000.png")
	req := shared.DenoiseRequest{Seed: 3, Steps: 4, Products: []string{shared.ProductImage}}
	_, guided, guidedBlobs := denoiseDatasetImage(t, e, src, req)
	req.Guidance = shared.GuidanceNone
	up, plain, plainBlobs := denoiseDatasetImage(t, e, src, req)
	if len(guided) != 5 || len(plain) != 5 {
		t.Fatalf("%d and %d frames, want 5", len(guided), len(plain))
	}
	for i := range guided {
		if guided[i].Guidance != shared.GuidanceSG || plain[i].Guidance != shared.GuidanceNone {
			t.Fatalf("frame %d says %q and %q", i, guided[i].Guidance, plain[i].Guidance)
		}
		if guided[i].T != plain[i].T || guided[i].Type != plain[i].Type {
			t.Fatalf("frame %d: t %d vs %d", i, guided[i].T, plain[i].T)
		}
	}
	if guided[0].Trajectory == plain[0].Trajectory {
		t.Fatal("both variants share one trajectory key")
	}
	// The final reconstruction (blob 1 of the final frame) differs.
	if bytes.Equal(guidedBlobs[4][1], plainBlobs[4][1]) {
		t.Fatal("switching the SG network off did not change the reconstruction")
	}
	if guided[4].Score == plain[4].Score {
		t.Fatalf("same final score %v with and without the SG network", guided[4].Score)
	}
	// The same request again replays the same variant.
	_, again, _ := denoiseDatasetImage(t, e, src, req)
	if !sameScore(again[4].Score, plain[4].Score) || !slices.ContainsFunc(again, func(f shared.Frame) bool { return f.Guidance == shared.GuidanceNone }) {
		t.Fatalf("unguided again: score %v, first %v", again[4].Score, plain[4].Score)
	}
	// An unknown variant is refused, naming the known ones.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _, err := denoise(t, ctx, e.base, shared.DenoiseRequest{UploadID: up.ID, Guidance: "off"}, true)
	if err == nil || !strings.Contains(err.Error(), `unknown guidance \"off\"`) {
		t.Fatalf("guidance off: %v", err)
	}
}

// GET /api/v1/trajectory draws the trajectory the websocket streams: a GIF
// with a frame per step, a strip whose image panels are exactly the step
// frames' predicted images; bad parameters are 400s, a missing image a 404.
func TestTrajectoryExportDrawsTheStreamedSteps(t *testing.T) {
	e := startEnv(t, nil)
	steerModel(t, e.model)
	src := filepath.Join("disc", "test", "missing", "000.png")
	up, frames, blobs := denoiseDatasetImage(t, e, src, shared.DenoiseRequest{Seed: 3, Steps: 4, Products: []string{shared.ProductImage}})
	base := shared.TrajectoryExport{Denoise: shared.DenoiseRequest{UploadID: up.ID, Seed: 3, Steps: 4}}
	get := func(x shared.TrajectoryExport) (*http.Response, []byte) {
		return e.do(t, "GET", "/api/v1/trajectory?"+x.Query().Encode(), nil)
	}
	r, body := get(base)
	if r.StatusCode != http.StatusOK || r.Header.Get("Content-Type") != "image/gif" || !strings.Contains(r.Header.Get("Content-Disposition"), ".gif") {
		t.Fatalf("GIF: %d %s %q", r.StatusCode, r.Header.Get("Content-Type"), body[:min(len(body), 200)])
	}
	anim, err := gif.DecodeAll(bytes.NewReader(body))
	if err != nil || len(anim.Image) != 4 {
		t.Fatalf("GIF: %v, %d frames", err, len(anim.Image))
	}
	// A strip of the predicted images at their own size, steps 1 and 4.
	x := base
	x.Format, x.Panels, x.StripSteps, x.Side = shared.TrajectoryStrip, "image", "1,4", 64
	r, body = get(x)
	if r.StatusCode != http.StatusOK || r.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("strip: %d %s", r.StatusCode, body[:min(len(body), 200)])
	}
	strip, err := png.Decode(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	layout := storyboard.Trajectory{Title: "titled"}
	opts := storyboard.Options{Panels: []string{storyboard.PanelImage}, Side: 64}
	for row, step := range []int{0, 3} {
		want, err := png.Decode(bytes.NewReader(blobs[step][0]))
		if err != nil {
			t.Fatal(err)
		}
		at := layout.PanelAt(opts, row, 0)
		for y := 0; y < 64; y++ {
			for x := 0; x < 64; x++ {
				if a, b := color.RGBAModel.Convert(strip.At(at.Min.X+x, at.Min.Y+y)), color.RGBAModel.Convert(want.At(x, y)); a != b {
					t.Fatalf("strip row %d (step %d, t %d) at %d,%d: %v, the stream's frame %v", row, step+1, frames[step].T, x, y, a, b)
				}
			}
		}
	}
	// With the SG network off, another picture.
	x.Denoise.Guidance = shared.GuidanceNone
	if _, off := get(x); bytes.Equal(off, body) {
		t.Fatal("the strip without the SG network is the same picture")
	}
	for q, want := range map[string]int{
		"upload_id=" + up.ID + "&format=mp4":                         400,
		"upload_id=" + up.ID + "&panels=noise":                       400,
		"upload_id=" + up.ID + "&strip_steps=9&format=strip&steps=4": 400,
		"upload_id=" + up.ID + "&side=4096":                          400,
		"upload_id=" + up.ID + "&colour=red":                         400,
		"upload_id=" + up.ID + "&start_t=5000":                       400,
		"upload_id=u-gone":                                           400, // not an upload id
		"run_id=nope&image_id=1":                                     404,
	} {
		if r, body := e.do(t, "GET", "/api/v1/trajectory?"+q, nil); r.StatusCode != want {
			t.Errorf("%s: %d %s, want %d", q, r.StatusCode, body, want)
		}
	}
	e.alive(t)
}

// sameScore is what "the same score" promises for two computations of one
// request (the second here is a new upload, so it is computed again, not
// replayed): bitwise equal at the same thread count on one machine, and
// within float32 rounding otherwise. The server's thread team follows the
// machine's share of the cores (torchrt), and libtorch's reductions
// (oneDNN 3.12's among them) may sum in another order at another count:
// 1.2e-7 apart on a score of 0.47 was seen on a Zen 5 machine.
func sameScore(a, b float64) bool {
	return math.Abs(a-b) <= 1e-6*math.Max(1, math.Abs(b))
}
