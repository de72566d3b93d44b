package results

import (
	"encoding/json"
	"testing"
)

// FuzzShardFiles: a partition's shard.json and exact-map rows come from
// disk (another machine's shard): any bytes either decode into consistent
// values or give an error - never a panic, never a map of another size
// than its header says.
func FuzzShardFiles(f *testing.F) {
	good := NewPixelRow("20261129T120000Z-abcdef", 3, 2, 2, []float32{0, 1, -2, 3.5}, []bool{true, false, false, true})
	f.Add([]byte(`{"run":{"run_id":"20261129T120000Z-abcdef","kind":"test"},"index":1,"count":4,"split_images":10,"threshold":"max-f1"}`), good.Map, good.Mask, int32(2), int32(2))
	f.Add([]byte(`{"index":-1,"count":0}`), []byte{}, []byte{}, int32(0), int32(0))
	f.Add([]byte(`not json`), []byte{1, 2, 3}, []byte{0xff}, int32(1), int32(3))
	f.Add([]byte(`{"unreadable":[1,2,3],"metrics":{"pro":{}}}`), make([]byte, 16), []byte{0x0f}, int32(-2), int32(-2))
	f.Fuzz(func(t *testing.T, info, m, mask []byte, w, h int32) {
		var si ShardInfo
		if json.Unmarshal(info, &si) == nil {
			if si.Spec().Validate() == nil && (si.Index < 0 || si.Index >= si.Count) {
				t.Fatalf("valid spec %v out of range", si.Spec())
			}
		}
		r := PixelRow{ImageID: 1, Width: w, Height: h, Map: m, Mask: mask}
		vals, mk, err := r.Values()
		if err != nil {
			return
		}
		if len(vals) != int(w)*int(h) || (mk != nil && len(mk) != len(vals)) {
			t.Fatalf("%dx%d gave %d values and %d mask pixels", w, h, len(vals), len(mk))
		}
	})
}
