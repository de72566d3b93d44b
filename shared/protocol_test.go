package shared

import (
	"math"
	"testing"
)

func TestF16RoundTrip(t *testing.T) {
	in := []float32{0, 1, -2.5, 0.1, 65504, -1e-3}
	b := Blob{Name: BlobRawZt, Format: "f16", Shape: []int{2, 3}}
	out, err := DecodeF16(b, EncodeF16(in))
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		// Half floats keep 11 significant bits.
		if d := math.Abs(float64(out[i] - in[i])); d > math.Abs(float64(in[i]))/1024 {
			t.Errorf("%v came back as %v", in[i], out[i])
		}
	}
	for _, bad := range []struct {
		b    Blob
		data []byte
	}{
		{Blob{Format: "u8", Shape: []int{1}}, make([]byte, 2)},
		{Blob{Format: "f16", Shape: []int{2, 3}}, make([]byte, 10)},
		{Blob{Format: "f16", Shape: []int{0}}, nil},
		{Blob{Format: "f16"}, nil},
	} {
		if _, err := DecodeF16(bad.b, bad.data); err == nil {
			t.Errorf("accepted %+v with %d bytes", bad.b, len(bad.data))
		}
	}
}
