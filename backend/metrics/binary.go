package metrics

import (
	"errors"
	"fmt"
)

// ErrOneClass is returned by metrics that need both classes when one is absent.
var ErrOneClass = errors.New("metrics: need at least one positive and one negative")

// Binary holds the threshold-free metrics of one scored set.
type Binary struct {
	AUROC     float64 `json:"auroc"`
	AP        float64 `json:"ap"`
	F1Max     float64 `json:"f1max"`
	Positives int     `json:"positives"`
	Negatives int     `json:"negatives"`
}

// walkDescending visits the distinct scores of two ascending key sets from the
// highest down, giving for each the number of positives and negatives with
// exactly that score.
func walkDescending(pos, neg []uint32, visit func(key uint32, tp, fp int)) {
	i, j := len(pos)-1, len(neg)-1
	for i >= 0 || j >= 0 {
		var k uint32
		switch {
		case i < 0:
			k = neg[j]
		case j < 0:
			k = pos[i]
		default:
			k = max(pos[i], neg[j])
		}
		tp, fp := 0, 0
		for i >= 0 && pos[i] == k {
			tp++
			i--
		}
		for j >= 0 && neg[j] == k {
			fp++
			j--
		}
		visit(k, tp, fp)
	}
}

// binaryFromKeys computes AUROC, AP and F1max from sorted key sets.
func binaryFromKeys(pos, neg []uint32) (Binary, error) {
	P, N := len(pos), len(neg)
	b := Binary{Positives: P, Negatives: N}
	if P == 0 || N == 0 {
		return b, fmt.Errorf("%w (%d positives, %d negatives)", ErrOneClass, P, N)
	}
	// AUROC as the Mann-Whitney statistic, in integers: each negative beats
	// nothing, each positive above it scores 2, a tie scores 1; divide by 2PN.
	var twiceU uint64
	var ap, f1 float64
	tpCum, fpCum := 0, 0
	walkDescending(pos, neg, func(_ uint32, tp, fp int) {
		twiceU += uint64(fp) * uint64(2*tpCum+tp)
		tpCum += tp
		fpCum += fp
		if tp > 0 {
			// sklearn: AP = sum over thresholds of (R_n - R_{n-1}) * P_n.
			ap += float64(tp) / float64(P) * float64(tpCum) / float64(tpCum+fpCum)
			// F1 = 2PR/(P+R) = 2TP/(TP+FP+P).
			if f := 2 * float64(tpCum) / float64(tpCum+fpCum+P); f > f1 {
				f1 = f
			}
		}
	})
	b.AUROC = float64(twiceU) / (2 * float64(P) * float64(N))
	b.AP = ap
	b.F1Max = f1
	return b, nil
}

// BinaryMetrics computes AUROC, AP and F1max of scores against labels
// (true = anomalous). It fails on NaN scores, mismatched lengths, or a set
// with only one class.
func BinaryMetrics(scores []float32, labels []bool) (Binary, error) {
	pos, neg, err := splitKeys(scores, labels)
	if err != nil {
		return Binary{}, err
	}
	return binaryFromKeys(pos, neg)
}
