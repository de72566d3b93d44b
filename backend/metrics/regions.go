package metrics

// labelRegions labels the 8-connected foreground components of a w x h mask in
// place into labels (len w*h, 0 = background, 1..n = regions) and returns n and
// the area of each region (areas[0] unused). Two-pass union-find, as
// skimage.measure.label(connectivity=2) groups pixels.
func labelRegions(mask []bool, w, h int, labels []int32) (n int, areas []int) {
	parent := []int32{0}
	find := func(x int32) int32 {
		for parent[x] != x {
			parent[x] = parent[parent[x]]
			x = parent[x]
		}
		return x
	}
	union := func(a, b int32) int32 {
		ra, rb := find(a), find(b)
		if ra == rb {
			return ra
		}
		if ra < rb {
			parent[rb] = ra
			return ra
		}
		parent[ra] = rb
		return rb
	}
	for y := 0; y < h; y++ {
		row := y * w
		for x := 0; x < w; x++ {
			i := row + x
			if !mask[i] {
				labels[i] = 0
				continue
			}
			var l int32
			// Already-visited 8-neighbours: W, NW, N, NE.
			consider := func(j int) {
				if lj := labels[j]; lj != 0 {
					if l == 0 {
						l = find(lj)
					} else {
						l = union(l, lj)
					}
				}
			}
			if x > 0 {
				consider(i - 1)
			}
			if y > 0 {
				up := i - w
				if x > 0 {
					consider(up - 1)
				}
				consider(up)
				if x+1 < w {
					consider(up + 1)
				}
			}
			if l == 0 {
				l = int32(len(parent))
				parent = append(parent, l)
			}
			labels[i] = l
		}
	}
	// Second pass: compact roots to 1..n.
	compact := make([]int32, len(parent))
	areas = []int{0}
	for i, l := range labels {
		if l == 0 {
			continue
		}
		r := find(l)
		if compact[r] == 0 {
			n++
			compact[r] = int32(n)
			areas = append(areas, 0)
		}
		c := compact[r]
		labels[i] = c
		areas[c]++
	}
	return n, areas
}
