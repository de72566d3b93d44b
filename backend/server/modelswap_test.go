package server

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/stream"
	"github.com/diad-project/diad/shared"
)

// A request holds the denoiser it got on arrival; when a newer model
// replaces it before the request computes, the old engine is freed and the
// request must answer "send it again" instead of running on freed tensors
// (which crashed the process inside libtorch: seen in the live HTTP fuzz
// test as a segmentation fault in the autoencoder's first convolution).
func TestARequestOnAReplacedModelIsRefusedNotRunOnFreedWeights(t *testing.T) {
	e := startEnv(t, nil)
	old, err := e.srv.currentDenoiser()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.sampler(nil, shared.SamplerOverride{}); err != nil {
		t.Fatalf("sampler before the swap: %v", err)
	}
	if err := e.srv.useModel(e.model); err != nil { // a newer model: the old engine is freed
		t.Fatal(err)
	}
	if cur, err := e.srv.currentDenoiser(); err != nil || cur == old {
		t.Fatalf("after the swap the server still serves the old denoiser (%v)", err)
	}
	if _, err := old.sampler(nil, shared.SamplerOverride{}); !errors.Is(err, errModelReplaced) {
		t.Fatalf("sampler on the replaced model: %v", err)
	}
	img := filepath.Join(e.dataset, "woven", "test", "good", "000.png")
	spec := evaluate.TrajectorySpec{Path: img, Sampler: shared.SamplerConfig{Steps: 2}, Seed: 1}
	h := stream.NewHub(4, 4, e.srv.stats)
	if err := e.srv.compute(old, spec, shared.DefaultProducts, "k", h); !errors.Is(err, errModelReplaced) {
		t.Fatalf("trajectory on the replaced model: %v", err)
	}
}
