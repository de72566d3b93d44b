package shard

import (
	"fmt"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParse(t *testing.T) {
	s, err := Parse("3/16")
	if err != nil || s != (Spec{3, 16}) {
		t.Fatalf("Parse(3/16) = %v, %v", s, err)
	}
	for _, bad := range []string{"16/16", "-1/4", "3", "a/4", "1/0", "0/10000", ""} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if _, err := Parse("16/16"); err == nil || !strings.Contains(err.Error(), "out of range 0..15") {
		t.Errorf("out-of-range index: %v", err)
	}
}

func TestFromEnv(t *testing.T) {
	cases := []struct {
		name  string
		env   map[string]string
		count int
		want  Spec
		found bool
		err   string
	}{
		{"none", nil, 0, None, false, ""},
		{"slurm", map[string]string{EnvSlurmID: "5", EnvSlurmMin: "2", EnvSlurmCount: "4"}, 0, Spec{3, 4}, true, ""},
		{"slurm step", map[string]string{EnvSlurmID: "6", EnvSlurmMin: "0", EnvSlurmCount: "4", EnvSlurmStep: "2"}, 0, Spec{3, 4}, true, ""},
		{"slurm off step", map[string]string{EnvSlurmID: "5", EnvSlurmMin: "0", EnvSlurmCount: "4", EnvSlurmStep: "2"}, 0, Spec{}, true, "step"},
		{"slurm no array", map[string]string{EnvSlurmID: "5"}, 0, Spec{}, true, "job array"},
		{"slurm beyond", map[string]string{EnvSlurmID: "9", EnvSlurmMin: "0", EnvSlurmCount: "4"}, 0, Spec{}, true, "out of range"},
		{"k8s flag count", map[string]string{EnvK8sIndex: "2"}, 3, Spec{2, 3}, true, ""},
		{"k8s env count", map[string]string{EnvK8sIndex: "2", EnvCount: "8"}, 0, Spec{2, 8}, true, ""},
		{"k8s no count", map[string]string{EnvK8sIndex: "2"}, 0, Spec{}, true, "shard count"},
		{"k8s bad", map[string]string{EnvK8sIndex: "two", EnvCount: "8"}, 0, Spec{}, true, "whole number"},
		{"k8s beyond", map[string]string{EnvK8sIndex: "8", EnvCount: "8"}, 0, Spec{}, true, "out of range"},
	}
	for _, c := range cases {
		s, found, err := FromEnv(env(c.env), c.count)
		if found != c.found {
			t.Errorf("%s: found %v", c.name, found)
		}
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want one saying %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || s != c.want {
			t.Errorf("%s: %v, %v; want %v", c.name, s, err, c.want)
		}
	}
}

// TestSplitIsAPartition: every path lands in exactly one shard, the split is
// roughly even, and it depends only on the path (adding paths moves none).
func TestSplitIsAPartition(t *testing.T) {
	const n = 4
	var paths []string
	for i := 0; i < 2000; i++ {
		paths = append(paths, fmt.Sprintf("cat%d/test/defect/%03d.png", i%7, i))
	}
	count := make([]int, n)
	for _, p := range paths {
		owners := 0
		for i := 0; i < n; i++ {
			if (Spec{i, n}).Owns(p) {
				owners++
				count[i]++
			}
		}
		if owners != 1 {
			t.Fatalf("%s owned by %d shards", p, owners)
		}
		if Of(p, n) != Of(p, n) || Of(p, n) != Of(strings.ReplaceAll(p, "/", "/"), n) {
			t.Fatal("not deterministic")
		}
	}
	for i, c := range count {
		if c < 400 || c > 600 {
			t.Errorf("shard %d has %d of 2000 paths: uneven", i, c)
		}
	}
	// FNV-1a 64 of the path is 14808927551546479949 (computed outside Go),
	// 13 mod 16: a change of hash would move every image of every sharded
	// run, so it fails here.
	if got := Of("woven/test/good/000.png", 16); got != 13 {
		t.Fatalf("Of = %d, want 13", got)
	}
}

func TestDirName(t *testing.T) {
	s := Spec{3, 16}
	if s.DirName() != "shard=0003-of-0016" {
		t.Fatal(s.DirName())
	}
	back, ok := ParseDirName(s.DirName())
	if !ok || back != s {
		t.Fatalf("ParseDirName: %v %v", back, ok)
	}
	for _, bad := range []string{"shard=0016-of-0016", "shard=3-of-16", ".tmp-shard=0003-of-0016", "shard=0000-of-0000"} {
		if _, ok := ParseDirName(bad); ok {
			t.Errorf("ParseDirName(%q) accepted", bad)
		}
	}
}
