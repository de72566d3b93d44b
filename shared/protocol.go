// Package shared holds the Go types that the server and the WebAssembly client
// both compile: the versioned wire protocol of the REST API and websockets -
// every type and constant that crosses the wire is defined here once (the
// server's openapi.json is checked against these types). Its only
// dependency beyond the standard library is x448/float16, pure Go, so it
// builds for GOOS=js too; it must never import libtorch or the backend.
//
// Websocket frames are JSON text messages for control and events, and binary
// messages for pixel data. A binary message is
//
//	uint32 big-endian length of the header | header (JSON Frame) | blob bytes
//
// where the header's Blobs say where each image or array lies in the bytes
// that follow.
package shared

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/x448/float16"
)

// ProtocolVersion is sent in every frame and hello; clients refuse others.
const ProtocolVersion = 1

// Message types.
const (
	TypeHello    = "hello"   // server -> client on connect
	TypeDenoise  = "denoise" // client -> server: start a trajectory
	TypeStep     = "step"    // server -> client: one sampler step (binary)
	TypeFinal    = "final"   // server -> client: reconstruction, map, verdict (binary)
	TypeError    = "error"   // server -> client
	TypeJobEvent = "job"     // server -> client on /ws/jobs/{id}
	TypeChange   = "change"  // server -> client on /ws/changes
	TypeDropped  = "dropped" // server -> client: frames skipped for a slow reader
)

// Products a denoise request can ask for (default: all previews).
const (
	ProductLatent     = "latent"      // z_t preview (PNG)
	ProductX0Latent   = "x0_latent"   // predicted clean latent preview (PNG)
	ProductImage      = "image"       // decoded predicted image (PNG)
	ProductMap        = "map"         // anomaly map of the predicted image (uint8 + scale)
	ProductRawLatents = "raw_latents" // z_t and x0 latents as float16
)

// Blob names in frames. Step frames carry the requested products (the
// previews and the map are named as their products); the final frame the map
// and the reconstruction.
const (
	BlobLatent         = ProductLatent
	BlobX0Latent       = ProductX0Latent
	BlobImage          = ProductImage
	BlobMap            = ProductMap
	BlobReconstruction = "reconstruction"
	// The raw latents (ProductRawLatents), each shaped [channels, h, w].
	BlobRawZt = "zt"
	BlobRawX0 = "x0"
)

// DefaultProducts are sent when a request names none.
var DefaultProducts = []string{ProductLatent, ProductX0Latent, ProductImage, ProductMap}

// Hello greets a websocket client.
type Hello struct {
	Type     string `json:"type"`
	Protocol int    `json:"protocol"`
	Server   string `json:"server"`
}

// DenoiseRequest asks the server to reconstruct one image step by step.
type DenoiseRequest struct {
	Type string `json:"type"`
	// Exactly one of: an image of a results run, or an uploaded image.
	RunID    string `json:"run_id,omitempty"`
	ImageID  *int64 `json:"image_id,omitempty"`
	UploadID string `json:"upload_id,omitempty"`
	// Sampling: absent (or zero start_t and steps) take the model's defaults.
	// Sampler is ddim, ddpm or dpm++2m; Eta is DDIM's stochasticity.
	Sampler  string   `json:"sampler,omitempty"`
	StartT   int      `json:"start_t,omitempty"`
	Steps    int      `json:"steps,omitempty"`
	Eta      *float64 `json:"eta,omitempty"`
	Seed     uint64   `json:"seed,omitempty"`
	Products []string `json:"products,omitempty"`
	// Guidance is what steers the denoiser: GuidanceSG (absent means it,
	// DiAD) or GuidanceNone, the SG network switched off, to show what it
	// adds (same image, seed and sampler).
	Guidance string `json:"guidance,omitempty"`
}

// Guidance variants of a trajectory.
const (
	GuidanceSG   = "sg"   // the Semantic-Guided network steers the UNet (DiAD)
	GuidanceNone = "none" // the SG network switched off: its controls zeroed
)

// GuidanceOrDefault is the request's guidance, GuidanceSG when absent; an
// unknown value is an error naming the known ones.
func (r DenoiseRequest) GuidanceOrDefault() (string, error) {
	switch r.Guidance {
	case "", GuidanceSG:
		return GuidanceSG, nil
	case GuidanceNone:
		return GuidanceNone, nil
	}
	return "", fmt.Errorf("field \"guidance\": unknown guidance %q (want %q or %q)", r.Guidance, GuidanceSG, GuidanceNone)
}

// SamplerOverride is what the request changes of the model's sampler: an
// empty sampler, zero start_t and steps and an absent eta keep the model's.
func (r DenoiseRequest) SamplerOverride() SamplerOverride {
	var o SamplerOverride
	if r.Sampler != "" {
		o.Kind = &r.Sampler
	}
	if r.StartT > 0 {
		o.StartT = &r.StartT
	}
	if r.Steps > 0 {
		o.Steps = &r.Steps
	}
	o.Eta = r.Eta
	return o
}

// Blob locates one binary payload in a frame.
type Blob struct {
	Name   string `json:"name"`   // e.g. "latent", "image", "map"
	Format string `json:"format"` // "png", "u8" (quantised map), "f16"
	Width  int    `json:"width,omitempty"`
	Height int    `json:"height,omitempty"`
	// For "u8": value = Offset + q/255*Scale.
	Offset float32 `json:"offset,omitempty"`
	Scale  float32 `json:"scale,omitempty"`
	Shape  []int   `json:"shape,omitempty"` // for "f16"
	Start  int     `json:"start"`
	Length int     `json:"length"`
}

// Frame is the header of a binary message (step or final).
type Frame struct {
	Type     string `json:"type"`
	Protocol int    `json:"protocol"`
	// Trajectory identifies the reconstruction the frame belongs to.
	Trajectory string `json:"trajectory"`
	// Guidance is the variant the trajectory runs (GuidanceSG or
	// GuidanceNone), so that a client showing both tells them apart.
	Guidance string `json:"guidance,omitempty"`
	Step     int    `json:"step"`  // 0-based; for final = Total
	Total    int    `json:"total"` // number of steps
	T        int    `json:"t"`     // diffusion timestep of the step
	// StartT is the level the input latent was noised to (the sampler's
	// noise level): what "noise t0" means everywhere. The first step's T is
	// below it (ldm's discretisation starts under the start level).
	StartT int     `json:"start_t,omitempty"`
	Score  float64 `json:"score"` // image score of the step's predicted image
	// Signal is the noise schedule for teaching: sqrt(abar_t), the share
	// of the clean latent left in z_t, at t = 0, ScheduleStride,
	// 2*ScheduleStride, ... and the last timestep (the noise share is
	// sqrt(1 - Signal^2)). Sent with the first step and the final frame.
	Signal         []float32 `json:"signal,omitempty"`
	ScheduleStride int       `json:"schedule_stride,omitempty"`
	// Final only.
	Threshold float64 `json:"threshold,omitempty"`
	Anomalous bool    `json:"anomalous,omitempty"`
	Dropped   int     `json:"dropped,omitempty"` // frames skipped for this client so far
	Blobs     []Blob  `json:"blobs"`
}

// ErrorMessage reports a failure on a websocket.
type ErrorMessage struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// EncodeFrame builds a binary message from a header and its blobs' bytes (in
// Blobs order); it fills in Start and Length.
func EncodeFrame(f Frame, payloads [][]byte) ([]byte, error) {
	if len(payloads) != len(f.Blobs) {
		return nil, fmt.Errorf("frame: %d blobs, %d payloads", len(f.Blobs), len(payloads))
	}
	off := 0
	for i := range f.Blobs {
		f.Blobs[i].Start, f.Blobs[i].Length = off, len(payloads[i])
		off += len(payloads[i])
	}
	f.Protocol = ProtocolVersion
	head, err := json.Marshal(f)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 4, 4+len(head)+off)
	binary.BigEndian.PutUint32(out, uint32(len(head)))
	out = append(out, head...)
	for _, p := range payloads {
		out = append(out, p...)
	}
	return out, nil
}

// ErrFrame is returned for malformed binary messages.
var ErrFrame = errors.New("malformed frame")

// DecodeFrame splits a binary message into its header and blob bytes.
func DecodeFrame(msg []byte) (Frame, [][]byte, error) {
	if len(msg) < 4 {
		return Frame{}, nil, ErrFrame
	}
	n := int(binary.BigEndian.Uint32(msg))
	if n > len(msg)-4 {
		return Frame{}, nil, ErrFrame
	}
	var f Frame
	if err := json.Unmarshal(msg[4:4+n], &f); err != nil {
		return Frame{}, nil, fmt.Errorf("%w: %v", ErrFrame, err)
	}
	if f.Protocol != ProtocolVersion {
		return Frame{}, nil, fmt.Errorf("%w: protocol %d, want %d", ErrFrame, f.Protocol, ProtocolVersion)
	}
	body := msg[4+n:]
	blobs := make([][]byte, len(f.Blobs))
	for i, b := range f.Blobs {
		// Compared without adding, which could overflow for hostile values.
		if b.Start < 0 || b.Length < 0 || b.Start > len(body) || b.Length > len(body)-b.Start {
			return Frame{}, nil, fmt.Errorf("%w: blob %s out of range", ErrFrame, b.Name)
		}
		blobs[i] = body[b.Start : b.Start+b.Length]
	}
	return f, blobs, nil
}

// Dequantize decodes a "u8" blob.
func Dequantize(b Blob, data []byte) []float32 {
	out := make([]float32, len(data))
	for i, q := range data {
		out[i] = b.Offset + float32(q)/255*b.Scale
	}
	return out
}

// EncodeF16 packs values as little-endian IEEE half floats (an "f16" blob).
func EncodeF16(values []float32) []byte {
	out := make([]byte, 2*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint16(out[2*i:], float16.Fromfloat32(v).Bits())
	}
	return out
}

// DecodeF16 unpacks an "f16" blob; its bytes must hold exactly its shape.
func DecodeF16(b Blob, data []byte) ([]float32, error) {
	if b.Format != "f16" {
		return nil, fmt.Errorf("blob %s: format %q, want f16", b.Name, b.Format)
	}
	n := 1
	for _, d := range b.Shape {
		if d <= 0 {
			return nil, fmt.Errorf("blob %s: shape %v", b.Name, b.Shape)
		}
		n *= d
	}
	if len(b.Shape) == 0 || 2*n != len(data) {
		return nil, fmt.Errorf("blob %s: %d bytes for shape %v", b.Name, len(data), b.Shape)
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = float16.Frombits(binary.LittleEndian.Uint16(data[2*i:])).Float32()
	}
	return out, nil
}

// Kinds of Change.
const (
	ChangeLabels = "labels" // analyst labels of a run's images changed
	ChangeJobs   = "jobs"   // a job was queued, started, ended or cancelled
	ChangeRuns   = "runs"   // a run was written (a test or predict job ended)
	// ChangeThreshold: a run's decision threshold was saved (its images'
	// verdicts changed with it).
	ChangeThreshold = "threshold"
)

// Change tells every open page that something it may show changed, so that
// it refetches that instead of polling (/api/v1/ws/changes). A page that
// misses one (a slow connection drops messages) catches up with its slow
// poll.
type Change struct {
	Type     string  `json:"type"`
	Kind     string  `json:"kind"`
	RunID    string  `json:"run_id,omitempty"`
	ImageIDs []int64 `json:"image_ids,omitempty"` // labels: the images whose labels changed
	JobID    string  `json:"job_id,omitempty"`
	State    string  `json:"state,omitempty"` // jobs: the job's new state
	User     string  `json:"user,omitempty"`  // labels: who changed them
}
