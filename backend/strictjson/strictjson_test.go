package strictjson

import (
	"errors"
	"strings"
	"testing"
)

type inner struct {
	Root string `json:"root"`
}

type request struct {
	Name   string         `json:"name"`
	Steps  int            `json:"steps,omitempty"`
	Data   inner          `json:"data"`
	Extra  map[string]any `json:"extra"`
	List   []inner        `json:"list"`
	hidden int
}

func TestUnmarshal(t *testing.T) {
	for _, c := range []struct {
		in, field, msg string
	}{
		{`{"name":"a","steps":2,"data":{"root":"r"},"extra":{"x":1},"list":[{"root":"q"}]}`, "", ""},
		{`{"name":"a"} `, "", ""},
		{`{"name":"a"}x`, "", "trailing data"},
		{`{"name":"a"}{"name":"b"}`, "", "trailing data"},
		{`{"name":"t3","name":"t5"}`, "name", "given twice"},
		{`{"name":"t3","Name":"t5"}`, "Name", `given twice (also as "name")`},
		{`{"Name":"t5"}`, "Name", "unknown field"},
		{`{"nmae":"x"}`, "nmae", "unknown field"},
		{`{"data":{"root":"a","Root":"b"}}`, "data.Root", "given twice"},
		{`{"data":{"rooot":"a"}}`, "data.rooot", "unknown field"},
		{`{"list":[{"root":"a"},{"bad":1}]}`, "list[1].bad", "unknown field"},
		{`{"extra":{"k":1,"K":2}}`, "extra.K", "given twice"},
		{`{"steps":"many"}`, "steps", "want int"},
		{`{"hidden":1}`, "hidden", "unknown field"},
		{`{"name":`, "name", "unexpected end"},
		{``, "", "unexpected end"},
	} {
		var r request
		err := Unmarshal([]byte(c.in), &r)
		if c.msg == "" {
			if err != nil {
				t.Errorf("%s: %v", c.in, err)
			}
			continue
		}
		var se *Error
		if !errors.As(err, &se) || !strings.Contains(se.Msg, c.msg) || se.Field != c.field {
			t.Errorf("%s: error %#v, want field %q and %q", c.in, err, c.field, c.msg)
		}
	}
	var r request
	if err := Unmarshal([]byte(`{"name":"ok","data":{"root":"r"}}`), &r); err != nil || r.Name != "ok" || r.Data.Root != "r" {
		t.Fatalf("decoded %+v, %v", r, err)
	}
}

// FuzzUnmarshal: any input is either rejected with an *Error or decodes;
// nothing panics, and what decodes has no duplicate keys.
func FuzzUnmarshal(f *testing.F) {
	for _, s := range []string{`{"name":"a","data":{"root":"r"}}`, `{"name":"a","Name":"b"}`, `{"list":[{"root":"x"}],"extra":{"a":[1,{"b":null}]}}`, `[]`, `"x"`, `{"a"`, `{}{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var r request
		err := Unmarshal(data, &r)
		var se *Error
		if err != nil && !errors.As(err, &se) {
			t.Fatalf("error of another type: %T %v", err, err)
		}
	})
}
