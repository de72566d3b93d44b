// Package torchref runs DiAD's networks in PyTorch eager beside diad: a
// Python worker (diad_torch.py, embedded) builds the same modules with the
// same parameter names from a diad checkpoint, and answers one request at a
// time (denoise, encode, decode, reconstruct, train step), timing only the
// computation and reporting its peak memory. Side by side with diad's own
// calls on the same weights and inputs, it gives diad's speed against
// PyTorch's (`diad-dev bench torch`) and checks that both compute the same
// thing (the outputs' relative difference).
//
// The worker needs python3 with torch, numpy and PyYAML (Debian's
// python3-torch, in diad's build root).
package torchref

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
)

//go:embed diad_torch.py
var script string

// Attention kernels the worker can use: torch's fused
// scaled_dot_product_attention (what diad calls) or the separate
// einsum-softmax-einsum of the reference's modules without xformers.
const (
	AttentionSDPA   = "sdpa"
	AttentionEinsum = "einsum"
)

// Options start a worker.
type Options struct {
	// Threads is torch's intra-op thread count (0: torch's default).
	Threads int
	// Attention is AttentionSDPA (empty) or AttentionEinsum.
	Attention string
	// Variants change PyTorch's side, to measure a candidate speed-up on
	// the same libtorch: VariantChannelsLast, VariantBF16.
	Variants []string
	// Python is the interpreter (empty: python3 on PATH).
	Python string
}

// Variants of the worker's computation.
const (
	VariantChannelsLast = "channels_last" // NHWC weights and activations
	VariantBF16         = "bf16"          // CPU autocast to bfloat16
)

// Ops the worker answers.
const (
	OpDenoise     = "denoise"     // inputs z, t, image; output eps (the guided noise prediction)
	OpEncode      = "encode"      // inputs image, post; output latent (a scaled posterior sample)
	OpDecode      = "decode"      // input latent; output image
	OpReconstruct = "reconstruct" // inputs image, post, noise; outputs image, latent
	OpTrain       = "train"       // inputs image, post, t, eps; output loss (one AdamW step)
	// OpFlops counts the floating-point operations of one call of the op
	// Request.Of (torch's FlopCounterMode: convolutions, matrix products,
	// attention; a multiply-add is two). It answers Reply.Flops.
	OpFlops = "flops"
)

// Request is one call. Inputs is a safetensors file of the op's input
// tensors (read once, then kept by the worker); Output, when set, receives
// the result.
type Request struct {
	Op     string `json:"op"`
	Inputs string `json:"inputs"`
	Output string `json:"output,omitempty"`
	// Start and Timesteps are a reconstruction's noise level and DDIM
	// steps (descending).
	Start     int    `json:"start,omitempty"`
	Timesteps []int  `json:"timesteps,omitempty"`
	AdamW     *AdamW `json:"adamw,omitempty"` // train: the optimizer's setting (used at the first step)
	Of        string `json:"of,omitempty"`    // flops: the op to count
}

// AdamW is torch.optim.AdamW's setting.
type AdamW struct {
	LR          float64 `json:"lr"`
	Beta1       float64 `json:"beta1"`
	Beta2       float64 `json:"beta2"`
	Eps         float64 `json:"eps"`
	WeightDecay float64 `json:"weight_decay"`
}

// Reply is the worker's answer.
type Reply struct {
	Seconds float64 `json:"seconds"`
	// RSSBeforeMiB is the process's resident memory before the call;
	// PeakRSSMiB its peak during the call (the counter is reset first).
	RSSBeforeMiB float64 `json:"rss_before_mib"`
	PeakRSSMiB   float64 `json:"peak_rss_mib"`
	Flops        float64 `json:"flops,omitempty"`
	Error        string  `json:"error,omitempty"`
}

// Worker is a running Python process holding one model.
type Worker struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	stderr *tailBuffer
	mu     sync.Mutex
	// Threads and Torch are what the worker reported at start.
	Threads int
	Torch   string
}

// Start launches a worker on a diad checkpoint (safetensors with the model
// config in its metadata) and waits until the model is loaded.
func Start(ctx context.Context, checkpoint string, o Options) (*Worker, error) {
	python := o.Python
	if python == "" {
		python = "python3"
	}
	attn := o.Attention
	if attn == "" {
		attn = AttentionSDPA
	}
	if attn != AttentionSDPA && attn != AttentionEinsum {
		return nil, fmt.Errorf("torchref: attention %q: want %s or %s", attn, AttentionSDPA, AttentionEinsum)
	}
	for _, v := range o.Variants {
		if v != VariantChannelsLast && v != VariantBF16 {
			return nil, fmt.Errorf("torchref: variant %q: want %s or %s", v, VariantChannelsLast, VariantBF16)
		}
	}
	cmd := exec.CommandContext(ctx, python, "-c", script, checkpoint, fmt.Sprint(o.Threads), attn, strings.Join(o.Variants, ","))
	// Both sides get the thread count asked for, and they never run at
	// once. BLAS runs single-threaded on both, as diad sets it
	// (torchrt.SetBLASThreads): with OpenBLAS's default thread per core
	// beside torch's own threads, the worker ran 7-14x slower on 2 cores.
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	if os.Getenv("OPENBLAS_NUM_THREADS") == "" {
		cmd.Env = append(cmd.Env, "OPENBLAS_NUM_THREADS=1")
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("torchref: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("torchref: %w", err)
	}
	tail := &tailBuffer{max: 8 << 10}
	cmd.Stderr = tail
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("torchref: start %s: %w", python, err)
	}
	w := &Worker{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout), stderr: tail}
	var ready struct {
		Ready   bool   `json:"ready"`
		Threads int    `json:"threads"`
		Torch   string `json:"torch"`
	}
	if err := w.readLine(&ready); err != nil || !ready.Ready {
		if err == nil {
			err = errors.New("no ready line")
		}
		// The worker's own exit status says no more than its stderr,
		// which err already carries.
		return nil, errors.Join(fmt.Errorf("torchref: load %s in PyTorch: %w", checkpoint, err), w.Close())
	}
	w.Threads, w.Torch = ready.Threads, ready.Torch
	return w, nil
}

// readLine decodes the worker's next stdout line into v; if the worker
// ended, the error carries the end of its stderr.
func (w *Worker) readLine(v any) error {
	line, err := w.out.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("worker ended: %w; stderr: %s", err, strings.TrimSpace(w.stderr.String()))
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("worker answered %q: %w", strings.TrimSpace(string(line)), err)
	}
	return nil
}

// Run sends one request and waits for its reply.
func (w *Worker) Run(r Request) (Reply, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	b, err := json.Marshal(r)
	if err != nil {
		return Reply{}, err
	}
	if _, err := w.stdin.Write(append(b, '\n')); err != nil {
		return Reply{}, fmt.Errorf("torchref: %s: send: %w; stderr: %s", r.Op, err, strings.TrimSpace(w.stderr.String()))
	}
	var rep Reply
	if err := w.readLine(&rep); err != nil {
		return Reply{}, fmt.Errorf("torchref: %s: %w", r.Op, err)
	}
	if rep.Error != "" {
		return rep, fmt.Errorf("torchref: %s in PyTorch: %s", r.Op, rep.Error)
	}
	return rep, nil
}

// Flops counts the floating-point operations of one call of c's
// computation in PyTorch (OpFlops).
func (w *Worker) Flops(c Case) (float64, error) {
	r := c.Request
	r.Op, r.Of, r.Output = OpFlops, c.Request.Op, ""
	rep, err := w.Run(r)
	if err != nil {
		return 0, err
	}
	if !(rep.Flops > 0) {
		return 0, fmt.Errorf("torchref: PyTorch counted %g operations in %s", rep.Flops, c.Name)
	}
	return rep.Flops, nil
}

// Close ends the worker.
func (w *Worker) Close() error {
	// Closing stdin ends the worker's request loop; a worker that already
	// ended makes it fail, and Wait then says how it ended.
	closeErr := w.stdin.Close()
	err := w.cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() != 0 {
		return fmt.Errorf("torchref: worker: %w; stderr: %s", err, strings.TrimSpace(w.stderr.String()))
	}
	if err != nil {
		return fmt.Errorf("torchref: worker: %w", err)
	}
	if closeErr != nil && !errors.Is(closeErr, os.ErrClosed) {
		return fmt.Errorf("torchref: worker: %w", closeErr)
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
