// Package train trains DiAD: optional stage-1 autoencoder fine-tuning (L1 +
// KL, as the reference's finetune_autoencoder.py), then the denoiser (SG
// network + UNet, eps-prediction MSE, AdamW, gradient accumulation, the
// reference freezing split or everything from scratch). It validates on a
// held-out part of the training split (never the test set), writes atomic
// checkpoints with the optimizer and random-generator state, resumes exactly
// after a crash, stops on a step, epoch or time budget, and reports progress
// as structured events.
package train

import (
	"fmt"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/diad-project/diad/backend/optim"
	"github.com/diad-project/diad/datasets"
)

// Config is a training run.
type Config struct {
	// Preset names the model preset; ModelConfig, if set, is a YAML file
	// overriding it.
	Preset      string          `yaml:"preset"`
	ModelConfig string          `yaml:"model_config"`
	Data        datasets.Source `yaml:"data"`
	OutDir      string          `yaml:"out_dir"`
	Device      string          `yaml:"device"`
	Seed        uint64          `yaml:"seed"`
	Threads     int             `yaml:"threads"` // libtorch intra-op threads (0 = leave)

	BatchSize int               `yaml:"batch_size"`
	GradAccum int               `yaml:"grad_accum"`
	Optim     optim.AdamWConfig `yaml:"optim"`
	// Freeze is the denoiser's split: reference, or none (from scratch).
	Freeze string `yaml:"freeze"`

	// Budgets: training stops at the first one reached (0 = no limit).
	MaxSteps    int           `yaml:"max_steps"`
	MaxEpochs   int           `yaml:"max_epochs"`
	MaxDuration time.Duration `yaml:"max_duration"`

	// ValFraction of the training images is held out for validation, every
	// ValEvery optimizer steps (0 = only at the end).
	ValFraction float64 `yaml:"val_fraction"`
	ValEvery    int     `yaml:"val_every"`
	// CheckpointEvery optimizer steps (0 = only at the end and when stopped).
	CheckpointEvery int `yaml:"checkpoint_every"`

	// InitFrom is a Stable Diffusion v1.x checkpoint for the UNet and
	// autoencoder; Autoencoder a checkpoint for the autoencoder alone.
	InitFrom    string `yaml:"init_from"`
	Autoencoder string `yaml:"autoencoder"`
	// AutoencoderSteps of stage-1 fine-tuning (0 = skip) with AutoencoderOptim.
	AutoencoderSteps int               `yaml:"autoencoder_steps"`
	AutoencoderOptim optim.AdamWConfig `yaml:"autoencoder_optim"`
	// KLWeight weighs the posterior's KL term in stage 1 (reference 1e-6).
	KLWeight float64 `yaml:"kl_weight"`
}

// ReferenceConfig is the paper's training (models/diad.yaml, the training
// script and Lightning's defaults): batch 12 x 4 accumulation, AdamW 1e-5,
// 1000 epochs, validation every 25 epochs' worth of steps is left to the user.
func ReferenceConfig() Config {
	return Config{
		Preset: "paper", Device: "auto", Seed: 1,
		BatchSize: 12, GradAccum: 4, Optim: optim.ReferenceAdamW, Freeze: "reference",
		MaxEpochs: 1000, ValFraction: 0.05,
		AutoencoderOptim: optim.AdamWConfig{LR: 1.8e-4, Beta1: 0.5, Beta2: 0.9, Eps: 1e-8},
		KLWeight:         1e-6,
	}
}

// CPUConfig trains a small model from scratch on a CPU: the autoencoder first
// (there are no pretrained weights to start from), then everything else, with
// learning rates suited to random initialisation.
func CPUConfig() Config {
	c := ReferenceConfig()
	c.Preset = "tiny"
	c.Device = "cpu"
	c.BatchSize, c.GradAccum = 8, 1
	c.Optim = optim.AdamWConfig{LR: 5e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
	c.Freeze = "none"
	c.MaxEpochs, c.MaxSteps = 0, 300
	c.AutoencoderSteps = 200
	c.AutoencoderOptim.LR = 1e-3
	c.ValFraction, c.ValEvery, c.CheckpointEvery = 0.1, 100, 100
	return c
}

// Presets by name.
var Presets = map[string]func() Config{"reference": ReferenceConfig, "cpu": CPUConfig}

// Load reads a YAML training config over a named preset (the file may set
// "base: cpu"; default "cpu").
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("train config: %w", err)
	}
	var head struct {
		Base string `yaml:"base"`
	}
	if err := yaml.Unmarshal(b, &head); err != nil {
		return Config{}, fmt.Errorf("train config %s: %w", path, err)
	}
	if head.Base == "" {
		head.Base = "cpu"
	}
	mk, ok := Presets[head.Base]
	if !ok {
		return Config{}, fmt.Errorf("train config %s: unknown base %q (want reference or cpu)", path, head.Base)
	}
	c := mk()
	if err := yaml.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("train config %s: %w", path, err)
	}
	return c, c.Validate()
}

// Validate checks the configuration.
func (c Config) Validate() error {
	switch {
	case c.Data.Root == "":
		return fmt.Errorf("train: data.root is required")
	case c.OutDir == "":
		return fmt.Errorf("train: out_dir is required")
	case c.BatchSize < 1 || c.GradAccum < 1:
		return fmt.Errorf("train: batch_size and grad_accum must be >= 1")
	case c.MaxSteps <= 0 && c.MaxEpochs <= 0 && c.MaxDuration <= 0:
		return fmt.Errorf("train: set at least one of max_steps, max_epochs, max_duration")
	case c.ValFraction < 0 || c.ValFraction >= 1:
		return fmt.Errorf("train: val_fraction must be in [0, 1)")
	case c.AutoencoderSteps < 0:
		return fmt.Errorf("train: autoencoder_steps must be >= 0")
	}
	return nil
}
