package shared

import (
	"fmt"
	"math"
	"net/url"
	"slices"
	"strconv"
)

// Formats of a trajectory export (GET /api/v1/trajectory).
const (
	TrajectoryGIF   = "gif"   // animated GIF, a frame per step
	TrajectoryStrip = "strip" // PNG, a row of panels per chosen step
)

// TrajectoryExport asks for a trajectory drawn for slides: the denoise
// request's image and sampling, and how to draw it. Panels (comma-separated:
// input, latent, image, map) and StripSteps (1-based, comma-separated) are
// read by the server's renderer; empty means its defaults. Side is each
// panel's side in pixels (0: the default).
type TrajectoryExport struct {
	Denoise    DenoiseRequest
	Format     string
	Panels     string
	StripSteps string
	Side       int
}

// trajectoryQueryKeys are the query parameters a TrajectoryExport uses,
// and the API token a link may carry (read by the server's auth layer).
var trajectoryQueryKeys = []string{"run_id", "image_id", "upload_id", "sampler", "start_t", "steps", "eta", "seed", "guidance",
	"format", "panels", "strip_steps", "side", "token"}

// Query is x as URL query parameters (zero fields left out).
func (x TrajectoryExport) Query() url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	num := func(k string, v int64) {
		if v != 0 {
			q.Set(k, strconv.FormatInt(v, 10))
		}
	}
	r := x.Denoise
	set("run_id", r.RunID)
	if r.ImageID != nil {
		q.Set("image_id", strconv.FormatInt(*r.ImageID, 10))
	}
	set("upload_id", r.UploadID)
	set("sampler", r.Sampler)
	num("start_t", int64(r.StartT))
	num("steps", int64(r.Steps))
	if r.Eta != nil {
		q.Set("eta", strconv.FormatFloat(*r.Eta, 'g', -1, 64))
	}
	if r.Seed != 0 {
		q.Set("seed", strconv.FormatUint(r.Seed, 10))
	}
	set("guidance", r.Guidance)
	set("format", x.Format)
	set("panels", x.Panels)
	set("strip_steps", x.StripSteps)
	num("side", int64(x.Side))
	return q
}

// ParseTrajectoryExport reads a TrajectoryExport from query parameters:
// unknown or repeated parameters and malformed numbers are errors; format
// defaults to gif.
func ParseTrajectoryExport(q url.Values) (TrajectoryExport, error) {
	var x TrajectoryExport
	for k, v := range q {
		if !slices.Contains(trajectoryQueryKeys, k) {
			return x, fmt.Errorf("unknown parameter %q", k)
		}
		if len(v) != 1 {
			return x, fmt.Errorf("parameter %q given %d times", k, len(v))
		}
	}
	var err error
	integer := func(k string, bits int) int64 {
		s := q.Get(k)
		if s == "" || err != nil {
			return 0
		}
		n, perr := strconv.ParseInt(s, 10, bits)
		if perr != nil || n < 0 {
			err = fmt.Errorf("parameter %q: want a whole number >= 0, got %q", k, s)
		}
		return n
	}
	r := &x.Denoise
	r.Type = TypeDenoise
	r.RunID, r.UploadID, r.Sampler, r.Guidance = q.Get("run_id"), q.Get("upload_id"), q.Get("sampler"), q.Get("guidance")
	if q.Has("image_id") {
		id := integer("image_id", 64)
		r.ImageID = &id
	}
	r.StartT, r.Steps = int(integer("start_t", 32)), int(integer("steps", 32))
	if s := q.Get("seed"); s != "" {
		seed, perr := strconv.ParseUint(s, 10, 64)
		if perr != nil {
			return x, fmt.Errorf("parameter \"seed\": want a whole number >= 0, got %q", s)
		}
		r.Seed = seed
	}
	if s := q.Get("eta"); s != "" {
		eta, perr := strconv.ParseFloat(s, 64)
		if perr != nil || math.IsNaN(eta) || math.IsInf(eta, 0) {
			return x, fmt.Errorf("parameter \"eta\": want a number, got %q", s)
		}
		r.Eta = &eta
	}
	x.Format, x.Panels, x.StripSteps = q.Get("format"), q.Get("panels"), q.Get("strip_steps")
	x.Side = int(integer("side", 16))
	if err != nil {
		return x, err
	}
	switch x.Format {
	case "":
		x.Format = TrajectoryGIF
	case TrajectoryGIF, TrajectoryStrip:
	default:
		return x, fmt.Errorf("parameter \"format\": %q (want %s or %s)", x.Format, TrajectoryGIF, TrajectoryStrip)
	}
	if _, gerr := r.GuidanceOrDefault(); gerr != nil {
		return x, gerr
	}
	return x, nil
}
