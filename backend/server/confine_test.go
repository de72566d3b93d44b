package server

import (
	"reflect"
	"strings"
	"testing"

	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/train"
	"github.com/diad-project/diad/shared"
)

// stringFields lists the yaml keys (dotted) of every string and []string
// field of a config struct, recursively.
func stringFields(t reflect.Type, prefix string) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		key := prefix + name
		switch {
		case f.Type.Kind() == reflect.String:
			out = append(out, key)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.String:
			out = append(out, key)
		case f.Type.Kind() == reflect.Struct && f.Type.PkgPath() != "time":
			out = append(out, stringFields(f.Type, key+".")...)
		}
	}
	return out
}

// nested turns "a.b" = v into {"a": {"b": v}} over base.
func nested(base map[string]any, key string, v any) map[string]any {
	out := map[string]any{}
	for k, x := range base {
		out[k] = x
	}
	parts := strings.Split(key, ".")
	m := out
	for _, p := range parts[:len(parts)-1] {
		sub := map[string]any{}
		if old, ok := m[p].(map[string]any); ok {
			for k, x := range old {
				sub[k] = x
			}
		}
		m[p] = sub
		m = sub
	}
	m[parts[len(parts)-1]] = v
	return out
}

// TestEveryPathFieldOfAJobIsConfined walks the job config structs: every
// string field must be classified here, so that a new path-valued field
// cannot be added without confining it. Each path field pointing outside the
// data roots is refused at submit, and the refusal quotes no file content.
func TestEveryPathFieldOfAJobIsConfined(t *testing.T) {
	confined := map[string]bool{ // refused when outside the roots
		"data.root": true, "data.csv": true, "model_config": true, "init_from": true, "init_weights": true, "autoencoder": true,
		"checkpoint": true, "features.weights": true,
	}
	serverSet := map[string]bool{"out_dir": true, "results_dir": true} // replaced by the server
	plain := map[string]bool{                                          // not paths
		"preset": true, "device": true, "freeze": true, "scorer": true, "scorer_candidates": true, "head_scorer_candidates": true, "threshold": true,
		"data.layout": true, "data.categories": true, "lr_schedule.kind": true, "features.arch": true,
	}
	e := startEnv(t, nil)
	for _, kind := range []struct {
		job  string
		typ  reflect.Type
		base map[string]any
	}{
		{shared.JobTrain, reflect.TypeOf(train.Config{}), map[string]any{"data": map[string]any{"root": "synth"}}},
		{shared.JobTest, reflect.TypeOf(evaluate.Config{}), map[string]any{"checkpoint": e.model, "data": map[string]any{"root": "synth"}}},
	} {
		fields := stringFields(kind.typ, "")
		if len(fields) < 5 {
			t.Fatalf("%s: found only %v", kind.job, fields)
		}
		for _, key := range fields {
			switch {
			case plain[key]:
				continue
			case serverSet[key]:
				cfg := nested(kind.base, key, "/etc")
				job := shared.Job{ID: "j-x", Kind: kind.job, Config: cfg}
				var got string
				if kind.job == shared.JobTrain {
					c, err := e.srv.trainConfig(job)
					if err != nil {
						t.Fatalf("%s %s: %v", kind.job, key, err)
					}
					got = c.OutDir
				} else {
					c, _, err := e.srv.evalConfig(job)
					if err != nil {
						t.Fatalf("%s %s: %v", kind.job, key, err)
					}
					got = c.ResultsDir
				}
				if !strings.HasPrefix(got, e.dataDir) {
					t.Fatalf("%s %s: the server kept %q outside its data folder", kind.job, key, got)
				}
			case confined[key]:
				cfg := nested(kind.base, key, "/etc/passwd")
				r, body := e.do(t, "POST", "/api/v1/jobs", shared.JobRequest{Kind: kind.job, Config: cfg})
				if r.StatusCode < 400 || r.StatusCode >= 500 {
					t.Fatalf("%s with %s=/etc/passwd: %d %s", kind.job, key, r.StatusCode, body)
				}
				if strings.Contains(string(body), "root:") {
					t.Fatalf("%s %s: the error quotes the file: %s", kind.job, key, body)
				}
			default:
				t.Errorf("%s: string field %q is not classified: confine it in jobfuncs.go if it is a path, then list it here", kind.job, key)
			}
		}
	}
}
