package kernelcheck

import "math"

// unitRoundoff is float32's unit roundoff, 2^-24.
const unitRoundoff = 1.0 / (1 << 24)

// sums is a reference result computed in float64 from the same float32
// inputs libtorch gets: per output element the exact sum, the sum of the
// absolute values of its terms and the number of terms - what the error
// bound of a float32 computation of that element needs.
type sums struct {
	val, abs []float64
	terms    []int
}

func newSums(n int) *sums {
	return &sums{val: make([]float64, n), abs: make([]float64, n), terms: make([]int, n)}
}

func (s *sums) add(i int, v float64) {
	s.val[i] += v
	s.abs[i] += math.Abs(v)
	s.terms[i]++
}

// gamma is Higham's γ_n = n·u / (1 - n·u): a float32 sum of n products,
// added in any order (blocked, vectorised, fused multiply-add), is off from
// the exact sum by at most γ_n·Σ|terms|.
func gamma(n int) float64 {
	nu := float64(n) * unitRoundoff
	return nu / (1 - nu)
}

// sumBound is the tolerance of sums-type results: twice the worst-case
// bound, so that a correct kernel can never fail, while a wrong one (a NaN,
// a missed or doubled term) is off by far more.
func (s *sums) bound() []float64 {
	b := make([]float64, len(s.val))
	for i := range b {
		b[i] = 2 * gamma(s.terms[i]) * s.abs[i]
	}
	return b
}

// convShape is a 2-D convolution of an [N, C, H, W] input with an
// [O, C, K, K] weight, stride and zero padding on both sides, one group.
type convShape struct {
	N, C, H, W, O, K, Stride, Pad int
}

func (c convShape) out() (oh, ow int) {
	return (c.H+2*c.Pad-c.K)/c.Stride + 1, (c.W+2*c.Pad-c.K)/c.Stride + 1
}

func (c convShape) inputLen() int  { return c.N * c.C * c.H * c.W }
func (c convShape) weightLen() int { return c.O * c.C * c.K * c.K }
func (c convShape) outputLen() int {
	oh, ow := c.out()
	return c.N * c.O * oh * ow
}

// convSums are a convolution's output y = conv(x, w) + b and, for an output
// gradient g, the gradients of its input, weight and bias.
type convSums struct{ y, gx, gw, gb *sums }

// convRef computes all four in one pass over every (output element, kernel
// tap) pair, which is every term of all four sums.
func convRef(c convShape, x, w, b, g []float64) convSums {
	oh, ow := c.out()
	y, gx, gw, gb := newSums(c.outputLen()), newSums(c.inputLen()), newSums(c.weightLen()), newSums(c.O)
	for n := 0; n < c.N; n++ {
		for o := 0; o < c.O; o++ {
			for i := 0; i < oh; i++ {
				for j := 0; j < ow; j++ {
					yi := ((n*c.O+o)*oh+i)*ow + j
					y.add(yi, b[o])
					gv := g[yi]
					gb.add(o, gv)
					for ch := 0; ch < c.C; ch++ {
						for ki := 0; ki < c.K; ki++ {
							h := i*c.Stride + ki - c.Pad
							if h < 0 || h >= c.H {
								continue
							}
							for kj := 0; kj < c.K; kj++ {
								v := j*c.Stride + kj - c.Pad
								if v < 0 || v >= c.W {
									continue
								}
								xi := ((n*c.C+ch)*c.H+h)*c.W + v
								wi := ((o*c.C+ch)*c.K+ki)*c.K + kj
								y.add(yi, x[xi]*w[wi])
								gx.add(xi, gv*w[wi])
								gw.add(wi, gv*x[xi])
							}
						}
					}
				}
			}
		}
	}
	return convSums{y, gx, gw, gb}
}

// normTolerance bounds the relative error of results that pass through a
// mean, a variance, a square root or an exponential (group norm, softmax):
// their float32 reductions here run over at most 128 values of order one, so
// the worst-case relative error is about 128·u ≈ 8e-6; the tolerance allows
// ten times that, and a wrong kernel is off by 1e-2 or more.
const normTolerance = 1e-4

// groupNormRef computes group normalisation of an [N, C, S] input (S the
// spatial size) in G groups with per-channel weight w and bias b, and for the
// output gradient g the input gradient. It returns each result with the
// magnitude its tolerance scales with.
func groupNormRef(n, c, s, groups int, eps float64, x, w, b, g []float64) (y, gx, ymag, gxmag []float64) {
	y, gx = make([]float64, len(x)), make([]float64, len(x))
	ymag, gxmag = make([]float64, len(x)), make([]float64, len(x))
	per := c / groups
	size := per * s
	xhat := make([]float64, size)
	gh := make([]float64, size)
	for i := 0; i < n; i++ {
		for grp := 0; grp < groups; grp++ {
			base := (i*c + grp*per) * s
			mean, sq := 0.0, 0.0
			for k := 0; k < size; k++ {
				mean += x[base+k]
			}
			mean /= float64(size)
			for k := 0; k < size; k++ {
				d := x[base+k] - mean
				sq += d * d
			}
			rstd := 1 / math.Sqrt(sq/float64(size)+eps)
			mg, mgx, mabs, mabsx := 0.0, 0.0, 0.0, 0.0
			for k := 0; k < size; k++ {
				ch := grp*per + k/s
				xhat[k] = (x[base+k] - mean) * rstd
				gh[k] = g[base+k] * w[ch]
				mg += gh[k]
				mgx += gh[k] * xhat[k]
				mabs += math.Abs(gh[k])
				mabsx += math.Abs(gh[k] * xhat[k])
			}
			mg /= float64(size)
			mgx /= float64(size)
			mabs /= float64(size)
			mabsx /= float64(size)
			for k := 0; k < size; k++ {
				ch := grp*per + k/s
				y[base+k] = xhat[k]*w[ch] + b[ch]
				ymag[base+k] = 1 + math.Abs(xhat[k]*w[ch]) + math.Abs(b[ch])
				gx[base+k] = rstd * (gh[k] - mg - xhat[k]*mgx)
				gxmag[base+k] = rstd * (math.Abs(gh[k]) + mabs + math.Abs(xhat[k])*mabsx)
			}
		}
	}
	return y, gx, ymag, gxmag
}

// attentionRef computes scaled-dot-product attention softmax(q·kᵀ/√d)·v on
// [B·H, L, D] inputs and, for the output gradient g, the gradients of q, k
// and v, each with the magnitude its tolerance scales with.
func attentionRef(bh, l, d int, q, k, v, g []float64) (out, gq, gk, gv, omag, qmag, kmag, vmag []float64) {
	n := bh * l * d
	out, gq, gk, gv = make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	omag, qmag, kmag, vmag = make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	scale := 1 / math.Sqrt(float64(d))
	p := make([]float64, l*l)
	dp := make([]float64, l*l)
	at := func(m []float64, b, i, j int) float64 { return m[(b*l+i)*d+j] }
	for b := 0; b < bh; b++ {
		for i := 0; i < l; i++ {
			mx := math.Inf(-1)
			for j := 0; j < l; j++ {
				s := 0.0
				for e := 0; e < d; e++ {
					s += at(q, b, i, e) * at(k, b, j, e)
				}
				p[i*l+j] = s * scale
				mx = math.Max(mx, p[i*l+j])
			}
			sum := 0.0
			for j := 0; j < l; j++ {
				p[i*l+j] = math.Exp(p[i*l+j] - mx)
				sum += p[i*l+j]
			}
			for j := 0; j < l; j++ {
				p[i*l+j] /= sum
			}
		}
		for i := 0; i < l; i++ {
			rowDot, rowAbs := 0.0, 0.0
			for j := 0; j < l; j++ {
				s := 0.0
				for e := 0; e < d; e++ {
					s += at(g, b, i, e) * at(v, b, j, e)
				}
				dp[i*l+j] = s
				rowDot += p[i*l+j] * s
				rowAbs += p[i*l+j] * math.Abs(s)
			}
			for j := 0; j < l; j++ {
				pij := p[i*l+j]
				ds := pij * (dp[i*l+j] - rowDot)
				dsAbs := pij * (math.Abs(dp[i*l+j]) + rowAbs)
				for e := 0; e < d; e++ {
					oi, kj := (b*l+i)*d+e, (b*l+j)*d+e
					out[oi] += pij * v[kj]
					omag[oi] += pij * math.Abs(v[kj])
					gv[kj] += pij * g[oi]
					vmag[kj] += pij * math.Abs(g[oi])
					gq[oi] += scale * ds * k[kj]
					qmag[oi] += scale * dsAbs * math.Abs(k[kj])
					gk[kj] += scale * ds * q[oi]
					kmag[kj] += scale * dsAbs * math.Abs(q[oi])
				}
			}
		}
	}
	for i := range omag {
		omag[i] += math.Abs(out[i])
	}
	return out, gq, gk, gv, omag, qmag, kmag, vmag
}
