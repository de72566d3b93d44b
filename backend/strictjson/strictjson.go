// Package strictjson decodes JSON from clients strictly: exactly one value
// (no trailing data, no second object), no key twice in an object (also not
// in another letter case), and for structs only the keys their fields name,
// spelled exactly. encoding/json alone accepts all of these, so that
// {"name":"a","Name":"b"} silently means "b".
package strictjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
)

// Error is a rejected document; Field names the offending key path when one
// is to blame (e.g. "config.data.root").
type Error struct {
	Field string
	Msg   string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return fmt.Sprintf("field %q: %s", e.Field, e.Msg)
}

// Unmarshal decodes data into v (a pointer), strictly.
func Unmarshal(data []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return errors.New("strictjson: need a non-nil pointer")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := checkValue(dec, rv.Type().Elem(), ""); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return &Error{Msg: "trailing data after the JSON value"}
	}
	strict := json.NewDecoder(bytes.NewReader(data))
	strict.DisallowUnknownFields()
	if err := strict.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &Error{Field: te.Field, Msg: fmt.Sprintf("want %s, got JSON %s", te.Type, te.Value)}
		}
		return &Error{Msg: err.Error()}
	}
	return nil
}

var unmarshaler = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()

// fieldNames maps the JSON names of a struct's fields (embedded structs
// flattened) to their types.
func fieldNames(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name := strings.Split(tag, ",")[0]
		if name == "-" && tag == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range fieldNames(ft) {
					out[k] = v
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// checkValue reads one value from dec, checking objects' keys against t
// (nil or interface: any keys, still no duplicates).
func checkValue(dec *json.Decoder, t reflect.Type, path string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && reflect.PointerTo(t).Implements(unmarshaler) {
		t = nil // decodes itself: keys are its business
	}
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return &Error{Field: path, Msg: "unexpected end of JSON"}
		}
		return &Error{Field: path, Msg: "malformed JSON: " + err.Error()}
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return nil // a scalar; its type is checked by the decoder
	}
	switch delim {
	case '{':
		var fields map[string]reflect.Type
		var elem reflect.Type
		if t != nil {
			switch t.Kind() {
			case reflect.Struct:
				fields = fieldNames(t)
			case reflect.Map:
				elem = t.Elem()
			}
		}
		seen := map[string]string{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return &Error{Field: path, Msg: "malformed JSON: " + err.Error()}
			}
			key, ok := kt.(string)
			if !ok { // the decoder only yields strings as object keys
				return &Error{Field: path, Msg: "malformed JSON: object key is not a string"}
			}
			lower := strings.ToLower(key)
			if prev, dup := seen[lower]; dup {
				if prev == key {
					return &Error{Field: join(path, key), Msg: "given twice"}
				}
				return &Error{Field: join(path, key), Msg: fmt.Sprintf("given twice (also as %q)", prev)}
			}
			seen[lower] = key
			next := elem
			if fields != nil {
				ft, ok := fields[key]
				if !ok {
					return &Error{Field: join(path, key), Msg: "unknown field"}
				}
				next = ft
			}
			if err := checkValue(dec, next, join(path, key)); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil { // '}'
			return &Error{Field: path, Msg: "malformed JSON: " + err.Error()}
		}
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := checkValue(dec, elem, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil { // ']'
			return &Error{Field: path, Msg: "malformed JSON: " + err.Error()}
		}
	}
	return nil
}
