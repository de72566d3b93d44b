package shared

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestTrajectoryExportQueryRoundTrip(t *testing.T) {
	id, eta := int64(7), 0.5
	x := TrajectoryExport{Denoise: DenoiseRequest{Type: TypeDenoise, RunID: "r1", ImageID: &id, Sampler: SamplerDDIM, StartT: 400, Steps: 20, Eta: &eta, Seed: 9, Guidance: GuidanceNone},
		Format: TrajectoryStrip, Panels: "input,map", StripSteps: "1,20", Side: 96}
	got, err := ParseTrajectoryExport(x.Query())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, x) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, x)
	}
	// Defaults: a GIF with SG guidance.
	got, err = ParseTrajectoryExport(url.Values{"upload_id": {"u1"}})
	if err != nil || got.Format != TrajectoryGIF || got.Denoise.UploadID != "u1" || got.Denoise.ImageID != nil {
		t.Fatalf("defaults: %+v %v", got, err)
	}
	for raw, want := range map[string]string{
		"run_id=r&image_id=x":         `"image_id"`,
		"run_id=r&image_id=-1":        `"image_id"`,
		"upload_id=u&steps=1e3":       `"steps"`,
		"upload_id=u&seed=-3":         `"seed"`,
		"upload_id=u&eta=half":        `"eta"`,
		"upload_id=u&format=mp4":      `"format"`,
		"upload_id=u&guidance=off":    `guidance`,
		"upload_id=u&colour=red":      `unknown parameter "colour"`,
		"upload_id=u&steps=1&steps=2": `given 2 times`,
		"upload_id=u&side=99999999":   `"side"`,
	} {
		q, err := url.ParseQuery(raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseTrajectoryExport(q); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %s", raw, err, want)
		}
	}
}

// Any query either is refused or parses to an export that survives its
// own round trip.
func FuzzParseTrajectoryExport(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		x, err := ParseTrajectoryExport(q)
		if err != nil {
			return
		}
		again, err := ParseTrajectoryExport(x.Query())
		if err != nil {
			t.Fatalf("%q parsed, its query %q did not: %v", raw, x.Query().Encode(), err)
		}
		if !reflect.DeepEqual(again, x) {
			t.Fatalf("%q: round trip %+v != %+v", raw, again, x)
		}
	})
}
