package cpuinfo

import (
	"strings"
	"testing"
)

// Two logical CPUs of an AMD EPYC of family 26, as /proc/cpuinfo lists them.
const zen5 = `processor	: 0
vendor_id	: AuthenticAMD
cpu family	: 26
model		: 2
model name	: AMD EPYC
cpu MHz		: 2096.016
flags		: fpu sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16 avx512_vp2intersect

processor	: 1
vendor_id	: AuthenticAMD
cpu family	: 26
model		: 2
model name	: AMD EPYC
cpu MHz		: 3000.000
flags		: fpu
`

func TestParse(t *testing.T) {
	info, err := Parse(strings.NewReader(zen5))
	if err != nil {
		t.Fatal(err)
	}
	if info.Vendor != "AuthenticAMD" || info.ModelName != "AMD EPYC" || info.Family != 26 || info.Model != 2 || info.Processors != 2 || info.MHz != 2096.016 {
		t.Fatalf("%+v", info)
	}
	if got := strings.Join(info.Present(KernelFlags), " "); got != "avx avx2 fma avx512f avx512_vnni avx512_bf16 avx512_vp2intersect" {
		t.Fatalf("kernel flags %q (the second processor's must not replace the first's)", got)
	}
	if info.Microarchitecture() != "Zen 5" || !strings.Contains(info.String(), "family 26 model 2, Zen 5), 2 logical CPUs") {
		t.Fatalf("%s", info)
	}
}

func TestMicroarchitecture(t *testing.T) {
	for _, c := range []struct {
		vendor        string
		family, model int
		want          string
	}{
		{"AuthenticAMD", 25, 0x11, "Zen 4"},
		{"AuthenticAMD", 25, 0x01, "Zen 3"},
		{"AuthenticAMD", 25, 0xa0, "Zen 4"},
		{"AuthenticAMD", 23, 0x31, "Zen 2"},
		{"AuthenticAMD", 26, 0x11, "Zen 5"},
		{"GenuineIntel", 6, 143, ""},
	} {
		if got := (Info{Vendor: c.vendor, Family: c.family, Model: c.model}).Microarchitecture(); got != c.want {
			t.Errorf("%s family %d model %#x: %q, want %q", c.vendor, c.family, c.model, got, c.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, bad := range []string{"", "vendor_id : x\n", "processor : 0\ncpu family : twenty\n", "processor : 0\ncpu MHz : fast\n"} {
		if _, err := Parse(strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestReadThisMachine(t *testing.T) {
	info, err := Read()
	if err != nil {
		t.Fatal(err)
	}
	if info.Processors < 1 || info.ModelName == "" {
		t.Fatalf("%+v", info)
	}
	t.Logf("%s; %s", info, strings.Join(info.Present(KernelFlags), " "))
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(zen5))
	f.Add([]byte("processor : 0\nmodel : 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := Parse(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		if info.Processors < 1 {
			t.Fatalf("parsed with %d processors", info.Processors)
		}
		_ = info.String()
	})
}
