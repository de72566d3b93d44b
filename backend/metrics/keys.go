package metrics

import (
	"errors"
	"math"
)

// ErrNaN is returned when a score is NaN: every metric would be meaningless.
var ErrNaN = errors.New("metrics: NaN score")

// sortKey maps a float32 to a uint32 whose unsigned order is the float's order
// (-Inf < negatives < -0 = +0 < positives < +Inf). -0 and +0 map to the same key
// so they tie, as they compare equal.
func sortKey(f float32) uint32 {
	if f == 0 {
		f = 0 // fold -0 into +0
	}
	b := math.Float32bits(f)
	if b&0x80000000 != 0 {
		return ^b
	}
	return b | 0x80000000
}

// keyValue inverts sortKey.
func keyValue(k uint32) float32 {
	if k&0x80000000 != 0 {
		return math.Float32frombits(k &^ 0x80000000)
	}
	return math.Float32frombits(^k)
}

// radixSort sorts keys ascending in place using buf (same length) as scratch:
// four stable counting passes over 8-bit digits, skipping digits that are
// constant across all keys.
func radixSort(keys, buf []uint32) {
	if len(keys) < 64 {
		insertionSort(keys)
		return
	}
	var counts [4][256]int
	for _, k := range keys {
		counts[0][k&0xff]++
		counts[1][(k>>8)&0xff]++
		counts[2][(k>>16)&0xff]++
		counts[3][k>>24]++
	}
	src, dst := keys, buf[:len(keys)]
	for pass := 0; pass < 4; pass++ {
		c := &counts[pass]
		shift := uint(pass * 8)
		if c[(src[0]>>shift)&0xff] == len(src) {
			continue // every key has the same digit here
		}
		var offs [256]int
		sum := 0
		for d := 0; d < 256; d++ {
			offs[d] = sum
			sum += c[d]
		}
		for _, k := range src {
			d := (k >> shift) & 0xff
			dst[offs[d]] = k
			offs[d]++
		}
		src, dst = dst, src
	}
	if &src[0] != &keys[0] {
		copy(keys, src)
	}
}

func insertionSort(a []uint32) {
	for i := 1; i < len(a); i++ {
		v := a[i]
		j := i
		for j > 0 && a[j-1] > v {
			a[j] = a[j-1]
			j--
		}
		a[j] = v
	}
}

// splitKeys converts scores to sort keys, separated by label, and sorts both.
func splitKeys(scores []float32, labels []bool) (pos, neg []uint32, err error) {
	if len(scores) != len(labels) {
		return nil, nil, errors.New("metrics: scores and labels differ in length")
	}
	np := 0
	for _, l := range labels {
		if l {
			np++
		}
	}
	pos = make([]uint32, 0, np)
	neg = make([]uint32, 0, len(scores)-np)
	for i, s := range scores {
		if s != s {
			return nil, nil, ErrNaN
		}
		if labels[i] {
			pos = append(pos, sortKey(s))
		} else {
			neg = append(neg, sortKey(s))
		}
	}
	sortBoth(pos, neg)
	return pos, neg, nil
}

// sortBoth radix-sorts both key sets with one shared scratch buffer.
func sortBoth(pos, neg []uint32) {
	buf := make([]uint32, max(len(pos), len(neg)))
	radixSort(pos, buf)
	radixSort(neg, buf)
}
