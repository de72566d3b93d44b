package shared

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strconv"
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

func TestDecodeFrameRefusesBlobsOutOfRange(t *testing.T) {
	for _, blob := range []string{
		`{"name":"a","start":9223372036854775807,"length":1}`, // start+length overflows
		`{"name":"a","start":1,"length":9223372036854775807}`,
		`{"name":"a","start":-1,"length":1}`,
		`{"name":"a","start":0,"length":5}`,
	} {
		head := []byte(`{"protocol":` + strconv.Itoa(ProtocolVersion) + `,"blobs":[` + blob + `]}`)
		msg := binary.BigEndian.AppendUint32(nil, uint32(len(head)))
		msg = append(append(msg, head...), "abcd"...)
		if _, _, err := DecodeFrame(msg); !errors.Is(err, ErrFrame) {
			t.Errorf("blob %s: %v, want ErrFrame", blob, err)
		}
	}
}

// FuzzDecodeFrame: any message either decodes into blobs that lie inside it
// and re-encode to the same bytes' blobs, or is refused with ErrFrame.
func FuzzDecodeFrame(f *testing.F) {
	good, err := EncodeFrame(Frame{Type: TypeStep, Step: 1, Blobs: []Blob{{Name: "map", Format: "u8", Shape: []int{2}}}}, [][]byte{{1, 2}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, msg []byte) {
		fr, blobs, err := DecodeFrame(msg)
		if err != nil {
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("error not ErrFrame: %v", err)
			}
			return
		}
		again, err := EncodeFrame(fr, blobs)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		fr2, blobs2, err := DecodeFrame(again)
		if err != nil || len(blobs2) != len(blobs) || fr2.Type != fr.Type {
			t.Fatalf("round trip: %v", err)
		}
		for i := range blobs {
			if !bytes.Equal(blobs[i], blobs2[i]) {
				t.Fatalf("blob %d changed in a round trip", i)
			}
		}
	})
}
