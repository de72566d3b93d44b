package evaluate

import (
	"path/filepath"
	"strings"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/features"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/scoring"
	"github.com/diad-project/diad/backend/torchrt"
)

// FeaturesConfig is the ImageNet feature extractor's configuration (for
// callers that hold one without doing tensor work, such as the server).
type FeaturesConfig = features.Config

// ModelInfo describes a checkpoint without loading its weights.
type ModelInfo struct {
	Preset string
	// Parameters counts the tensors' elements per component (autoencoder,
	// unet, sg).
	Parameters map[string]int64
}

// DescribeCheckpoint reads a checkpoint's header: its preset and the
// parameter count of each component.
func DescribeCheckpoint(path string) (ModelInfo, error) {
	r, err := checkpoint.Open(path)
	if err != nil {
		return ModelInfo{}, err
	}
	defer r.Close()
	info := ModelInfo{Preset: r.Metadata()[model.MetaPreset], Parameters: map[string]int64{}}
	for _, e := range r.Entries() {
		for comp, prefix := range model.Components {
			if strings.HasPrefix(e.Name, prefix) {
				info.Parameters[comp] += e.Numel()
			}
		}
	}
	return info, nil
}

// CheckpointPreset is the preset a checkpoint's config names (an error for a
// missing, corrupt or config-less file).
func CheckpointPreset(path string) (string, error) {
	cfg, err := model.ReadConfig(path)
	if err != nil {
		return "", err
	}
	return cfg.Preset, nil
}

// CheckScorer validates a scorer name (see scoring.ParseKind).
func CheckScorer(kind string) error {
	_, err := scoring.CanonicalKind(kind)
	return err
}

// Runtime is what the process's libtorch offers.
type Runtime struct {
	Libtorch string
	Devices  []string
	Threads  int
}

// RuntimeInfo reports the libtorch version, usable devices and threads.
func RuntimeInfo() Runtime {
	return Runtime{Libtorch: torchrt.LibtorchVersion(), Devices: torchrt.Devices(), Threads: torchrt.Threads()}
}

// ResolveScorerFor is ResolveScorer for a checkpoint file, read without
// loading its weights: the scorer kind a run of it with these settings uses.
func ResolveScorerFor(checkpointPath, requested string, fc FeaturesConfig) (string, error) {
	mc, err := model.ReadConfig(checkpointPath)
	if err != nil {
		return "", err
	}
	return ResolveScorer(requested, mc, fc, checkpointPath)
}

// ScorerIdentity names what a run's scores depend on besides the model: the
// scorer's terms and, when they include the ImageNet features, the extractor
// (architecture and weights file). Scores of runs with different identities
// are not comparable, and neither are their thresholds.
func ScorerIdentity(kind, arch, weights string) string {
	terms, err := scoring.ParseKind(kind)
	if err != nil {
		return kind
	}
	for _, t := range terms {
		if t == scoring.KindResNet {
			w := "random"
			if weights != "" {
				w = filepath.Base(weights)
			}
			return kind + "|" + arch + "|" + w
		}
	}
	return kind
}
