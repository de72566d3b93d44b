package train

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/layers"
	"github.com/diad-project/diad/backend/torchrt"
)

// Schedule is a learning-rate schedule: linear warm-up from 0, then constant
// or cosine decay to MinFactor times the base rate at the stage's last step.
type Schedule struct {
	Kind        string  `yaml:"kind"` // constant (default) or cosine
	WarmupSteps int     `yaml:"warmup_steps"`
	MinFactor   float64 `yaml:"min_factor"`
}

// Validate checks the schedule.
func (s Schedule) Validate() error {
	switch s.Kind {
	case "", "constant", "cosine":
	default:
		return fmt.Errorf("train: lr schedule %q (want constant or cosine)", s.Kind)
	}
	if s.WarmupSteps < 0 || s.MinFactor < 0 || s.MinFactor > 1 {
		return fmt.Errorf("train: lr schedule needs warmup_steps >= 0 and min_factor in [0, 1], got %+v", s)
	}
	return nil
}

// Factor is the multiplier of the base rate for optimizer step `step`
// (0-based) of a stage of `total` steps (0 = unbounded: no decay).
func (s Schedule) Factor(step, total int) float64 {
	if s.WarmupSteps > 0 && step < s.WarmupSteps {
		return float64(step+1) / float64(s.WarmupSteps)
	}
	if s.Kind != "cosine" || total <= s.WarmupSteps {
		return 1
	}
	p := float64(step-s.WarmupSteps) / float64(total-s.WarmupSteps)
	p = math.Min(math.Max(p, 0), 1)
	return s.MinFactor + (1-s.MinFactor)*0.5*(1+math.Cos(math.Pi*p))
}

// ema keeps an exponential moving average of the trainable parameters, as
// latent diffusion does for its denoiser: inference uses the average, which
// is smoother than the last step's weights. The decay warms up as
// min(Decay, (1+n)/(10+n)) so that early averages do not remember the
// random initialisation.
type ema struct {
	decay  float64
	params []*layers.Param
	shadow []*ts.Tensor
	// Updates counts the averaging steps (saved with checkpoints).
	Updates int64
}

// emaPrefix names the average's tensors in training checkpoints.
const emaPrefix = "ema."

func newEMA(params []*layers.Param, decay float64) *ema {
	e := &ema{decay: decay, params: params}
	torchrt.NoGrad(func() {
		for _, p := range params {
			e.shadow = append(e.shadow, copyOf(p.Tensor))
		}
	})
	return e
}

// update moves the average toward the current weights.
func (e *ema) update() {
	n := float64(e.Updates)
	d := math.Min(e.decay, (1+n)/(10+n))
	torchrt.NoGrad(func() {
		for i, p := range e.params {
			torchrt.Lerp_(e.shadow[i], p.Tensor, 1-d)
		}
	})
	e.Updates++
}

// swap exchanges the live weights with the average (call again to undo), so
// that validation and saving see the averaged model.
func (e *ema) swap() {
	torchrt.NoGrad(func() {
		for i, p := range e.params {
			tmp := copyOf(p.Tensor)
			torchrt.Copy_(p.Tensor, e.shadow[i])
			torchrt.Copy_(e.shadow[i], tmp)
			tmp.MustDrop()
		}
	})
}

// state is the average's tensors by parameter name, for checkpoints.
func (e *ema) state() map[string]*ts.Tensor {
	out := map[string]*ts.Tensor{}
	for i, p := range e.params {
		out[emaPrefix+p.Name] = e.shadow[i]
	}
	return out
}

// load replaces the average with saved tensors (names without the prefix).
func (e *ema) load(saved map[string]*ts.Tensor) error {
	for i, p := range e.params {
		v, ok := saved[p.Name]
		if !ok {
			return fmt.Errorf("ema: checkpoint lacks the average of %s", p.Name)
		}
		torchrt.NoGrad(func() { torchrt.Copy_(e.shadow[i], v) })
	}
	return nil
}

func (e *ema) free() {
	for _, s := range e.shadow {
		s.MustDrop()
	}
}

// copyOf is a detached copy of t's values.
func copyOf(t *ts.Tensor) *ts.Tensor {
	c := t.MustZerosLike(false)
	torchrt.Copy_(c, t)
	return c
}

// Float is a float64 whose JSON form round-trips every value: the
// infinities and NaN, which encoding/json refuses, are written as the strings
// "+Inf", "-Inf" and "NaN".
type Float float64

// MarshalJSON writes finite values as numbers and the rest as strings.
func (f Float) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsInf(v, 1):
		return []byte(`"+Inf"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-Inf"`), nil
	case math.IsNaN(v):
		return []byte(`"NaN"`), nil
	}
	return json.Marshal(v)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (f *Float) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		switch s {
		case "+Inf":
			*f = Float(math.Inf(1))
		case "-Inf":
			*f = Float(math.Inf(-1))
		case "NaN":
			*f = Float(math.NaN())
		default:
			return fmt.Errorf("train: %q is not a number", s)
		}
		return nil
	}
	var v float64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*f = Float(v)
	return nil
}
