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
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/diad-project/diad/backend/optim"
	"github.com/diad-project/diad/backend/patchmemory"
	"github.com/diad-project/diad/backend/scoring"
	"github.com/diad-project/diad/backend/seghead"
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
	// GradientCheckpointing recomputes the UNet's and the SG network's
	// block activations in the backward pass instead of keeping them
	// (latent diffusion's use_checkpoint): the same gradients in less
	// memory, for about one more forward pass per step.
	GradientCheckpointing bool `yaml:"gradient_checkpointing"`

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
	InitFrom string `yaml:"init_from"`
	// InitWeights is a diad checkpoint to fine-tune: its config (unless
	// ModelConfig is set) and every weight start the model.
	InitWeights string `yaml:"init_weights"`
	Autoencoder string `yaml:"autoencoder"`
	// AutoencoderSteps of stage-1 fine-tuning (0 = skip) with AutoencoderOptim.
	AutoencoderSteps int               `yaml:"autoencoder_steps"`
	AutoencoderOptim optim.AdamWConfig `yaml:"autoencoder_optim"`
	// KLWeight weighs the posterior's KL term in stage 1 (reference 1e-6).
	KLWeight float64 `yaml:"kl_weight"`
	// AutoencoderSSIMWeight adds this times (1 - SSIM) of the reconstruction
	// to stage 1's L1: SSIM rewards rebuilt texture and edges that L1 alone
	// blurs away (the reference uses LPIPS, which needs ImageNet weights).
	AutoencoderSSIMWeight float64 `yaml:"autoencoder_ssim_weight"`
	// AutoencoderCrop trains stage 1 on random square crops of this side
	// (0 = whole images; a multiple of the autoencoder's downsampling).
	AutoencoderCrop int `yaml:"autoencoder_crop"`
	// ScaleLatents sets the autoencoder's scale factor after stage 1 to one
	// over the standard deviation of the training latents (latent diffusion's
	// scale_by_std): the 0.18215 of SD's autoencoder fits no other one.
	ScaleLatents bool `yaml:"scale_latents"`
	// LRSchedule shapes both stages' learning rates.
	LRSchedule Schedule `yaml:"lr_schedule"`
	// EMADecay keeps an exponential moving average of the denoiser's weights
	// (0 = off); the saved models are the average.
	EMADecay float64 `yaml:"ema_decay"`
	// LossWeightCap, when > 0, weights each image's eps error by
	// clamp((1-abar_t)/abar_t, 1, cap): the error of the clean latent the
	// prediction implies, so noisy timesteps - where only the SG network
	// knows the content - are not drowned by easy ones (0 = uniform, the
	// reference).
	LossWeightCap float64 `yaml:"loss_weight_cap"`
	// RemoveFraction, when > 0, is the share of denoiser-stage images shown
	// to the SG network with a synthetic defect (calibrate.Corrupt's generic
	// families) while the target stays the clean image: the denoiser learns
	// to remove what the SG network sees but normal images never have
	// (model.TrainLossRemoving). 0 is the reference: normal images only.
	RemoveFraction float64 `yaml:"remove_fraction"`
	// GuidanceDropout, when > 0, is the share of denoiser-stage images
	// trained with the SG network's controls zeroed
	// (model.TrainLossDropping), so that the UNet learns normal images of
	// its own. 0 is the reference: always guided.
	GuidanceDropout float64 `yaml:"guidance_dropout"`
	// StartTCandidates, when set, are the sampler start levels tried after
	// training on held-out training images with synthetic defects; the best
	// becomes the model's default. Never the test set.
	StartTCandidates []int `yaml:"start_t_candidates"`
	// Scorer is the anomaly map the model defaults to without ImageNet weights
	// (e.g. "ae+ssim"); its terms are calibrated on held-out images.
	Scorer string `yaml:"scorer"`
	// ScorerCandidates, when set, are the scorers calibration chooses among
	// (with the start level, on the same held-out images); Scorer is ignored.
	ScorerCandidates []string `yaml:"scorer_candidates"`
	// Head, when it has channels, gives the model an anomaly head (package
	// seghead) that HeadTraining trains after the calibration; the model's
	// scorer is then the head's map ("seg").
	Head         seghead.Config      `yaml:"head"`
	HeadTraining seghead.TrainConfig `yaml:"head_training"`
	// HeadScorerCandidates, when set, are the scorers with the head's map
	// ("seg", alone or with other terms) chosen among after the head trained,
	// on the same held-out images and at the calibrated start level.
	HeadScorerCandidates []string `yaml:"head_scorer_candidates"`
	// PatchMemory, when it has a size, gives the model a memory of training
	// patches (package patchmemory), built from the training images after
	// the denoiser and before the calibration, so that scorers with "patch"
	// can be among the candidates.
	PatchMemory patchmemory.Config `yaml:"patch_memory"`
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

// DemoConfig trains the demo preset from scratch on a CPU within an hour on
// two cores (measured; see backend/model/demo/README.md): the autoencoder with L1 + SSIM
// and unit-variance latents, then the denoiser with warm-up, cosine decay and
// an EMA of its weights; then the patch memory is built from the training
// images, and the start level and the scorer (with or without the memory's
// map) are chosen on held-out training images with synthetic defects. demoMaxDuration bounds
// the training on a slower machine (the memory and the calibration after it
// take up to six minutes more).
func DemoConfig() Config {
	c := CPUConfig()
	c.Preset = "demo"
	c.BatchSize = 8
	c.AutoencoderSteps = 1500
	c.AutoencoderOptim = optim.AdamWConfig{LR: 1e-3, Beta1: 0.5, Beta2: 0.9, Eps: 1e-8}
	c.AutoencoderSSIMWeight = 1
	c.AutoencoderCrop = 64
	c.ScaleLatents = true
	c.Optim = optim.AdamWConfig{LR: 4e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
	c.LRSchedule = Schedule{Kind: "cosine", WarmupSteps: 100, MinFactor: 0.05}
	c.EMADecay = 0.995
	c.ValFraction, c.ValEvery, c.CheckpointEvery = 0.1, 500, 250
	c.MaxSteps, c.MaxDuration = 3600, demoMaxDuration
	c.StartTCandidates = []int{200, 300, 400, 500, 600, 700, 800}
	c.PatchMemory = patchmemory.DemoConfig
	// The memory's map alone: with a term of the reconstruction beside it
	// the held-out check rose a little on the photo set while the test fell
	// (patch+ssim 80.8 / 87.4 image / pixel AUROC, patch 87.4 / 92.7; the
	// card's experiments).
	c.ScorerCandidates = []string{"ae", "ae+pixel", "ae+ssim", "ae+pixel+ssim", "pixel", "ssim", "pixel+ssim", "patch"}
	return c
}

// DemoHeadConfig is the demo recipe with the anomaly head (package seghead)
// trained after the calibration, and the head's scorer chosen among seg
// combinations; the autoencoder and the denoiser get 45 minutes so that the
// whole run stays within the hour. Measured against the plain demo recipe it
// is not better (backend/model/demo/README.md), so it is not the default.
func DemoHeadConfig() Config {
	c := DemoConfig()
	c.Head, c.HeadTraining = seghead.DemoConfig, seghead.DemoTraining
	c.HeadScorerCandidates = []string{"seg", "pixel+seg", "seg+ssim"}
	c.MaxDuration = 60*time.Minute - demoHeadAfterDenoiser
	return c
}

// The demo recipes' hour on two cores keeps time for the steps after the
// denoiser: the patch memory and the calibration (3.3 minutes on the photo
// set without the memory; the memory adds its build, half a minute, and its
// maps to the scorers tried), and with the
// anomaly head also reconstructing the training images, the head's training
// (at most seghead.DemoTraining.MaxDuration) and its scorer choice (12
// minutes in all, measured).
const (
	demoAfterDenoiser     = 6 * time.Minute
	demoHeadAfterDenoiser = 15 * time.Minute
)

// demoMaxDuration is the demo recipe's budget for the autoencoder and the
// denoiser: the hour less what follows them.
const demoMaxDuration = 60*time.Minute - demoAfterDenoiser

// AfterDenoiser is the time a recipe keeps for the steps after the
// denoiser: what a whole-run budget must leave them.
func (c Config) AfterDenoiser() time.Duration {
	if c.HeadTraining.Steps > 0 {
		return demoHeadAfterDenoiser
	}
	return demoAfterDenoiser
}

// Presets by name.
var Presets = map[string]func() Config{"reference": ReferenceConfig, "cpu": CPUConfig, "demo": DemoConfig, "demo-head": DemoHeadConfig}

// Load reads a YAML training config over a named preset (the file may set
// "base: cpu"; default "cpu"). Unknown keys are errors, so a misspelt
// setting is not silently the preset's. Load does not validate: the CLI's
// flags may still fill in fields (e.g. --data); Run and Recalibrate validate.
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
		return Config{}, fmt.Errorf("train config %s: unknown base %q (want one of %s)", path, head.Base, strings.Join(PresetNames(), ", "))
	}
	file := struct {
		Base   string `yaml:"base"`
		Config `yaml:",inline"`
	}{Config: mk()}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("train config %s: %w", path, err)
	}
	return file.Config, nil
}

// PresetNames lists the bases Load and the CLI's --base accept, sorted.
func PresetNames() []string { return slices.Sorted(maps.Keys(Presets)) }

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
	case c.EMADecay < 0 || c.EMADecay >= 1:
		return fmt.Errorf("train: ema_decay must be in [0, 1)")
	case c.AutoencoderCrop < 0 || c.AutoencoderCrop%8 != 0:
		return fmt.Errorf("train: autoencoder_crop must be 0 or a positive multiple of 8, got %d", c.AutoencoderCrop)
	case c.LossWeightCap < 0 || (c.LossWeightCap > 0 && c.LossWeightCap < 1):
		return fmt.Errorf("train: loss_weight_cap must be 0 (off) or >= 1, got %g", c.LossWeightCap)
	case c.AutoencoderSSIMWeight < 0:
		return fmt.Errorf("train: autoencoder_ssim_weight must be >= 0")
	case c.RemoveFraction < 0 || c.RemoveFraction >= 1:
		return fmt.Errorf("train: remove_fraction must be in [0, 1), got %g", c.RemoveFraction)
	case c.GuidanceDropout < 0 || c.GuidanceDropout >= 1:
		return fmt.Errorf("train: guidance_dropout must be in [0, 1), got %g", c.GuidanceDropout)
	case c.RemoveFraction > 0 && c.GuidanceDropout > 0:
		return fmt.Errorf("train: remove_fraction and guidance_dropout cannot be combined")
	}
	for _, t := range c.StartTCandidates {
		if t < 1 || t > 999 {
			return fmt.Errorf("train: start_t_candidates must lie in [1, 999], got %v", c.StartTCandidates)
		}
	}
	for _, k := range append([]string{c.Scorer}, c.ScorerCandidates...) {
		if k == "" {
			continue
		}
		if _, err := scoring.ParseKind(k); err != nil {
			return fmt.Errorf("train: %w", err)
		}
		if headKinds(k) {
			return fmt.Errorf("train: scorer %q: the anomaly head's map is not calibrated; it becomes the scorer when head_training trains it", k)
		}
		if patchKinds(k) && !c.PatchMemory.Enabled() {
			return fmt.Errorf("train: scorer %q uses the patch memory, and patch_memory has no size", k)
		}
	}
	if err := c.PatchMemory.Validate(); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if err := c.Head.Validate(); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if c.HeadTraining.Steps < 0 {
		return fmt.Errorf("train: head_training.steps must be >= 0")
	}
	if c.HeadTraining.Steps > 0 && !c.Head.Enabled() {
		return fmt.Errorf("train: head_training has steps but head has no channels")
	}
	for _, k := range c.HeadScorerCandidates {
		if _, err := scoring.ParseKind(k); err != nil {
			return fmt.Errorf("train: head_scorer_candidates: %w", err)
		}
		if !headKinds(k) {
			return fmt.Errorf("train: head_scorer_candidates: %q does not use the head's map (seg)", k)
		}
	}
	return c.LRSchedule.Validate()
}
