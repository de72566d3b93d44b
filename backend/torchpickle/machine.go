package torchpickle

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// Values the machine builds. Python's scalars become Go's (nil, bool, int64,
// *big.Int, float64, string, []byte); containers and objects are these types.
type (
	// Tuple is a Python tuple.
	Tuple []any
	// List is a Python list (a pointer: the memo may share it).
	List struct{ Items []any }
	// Dict is a Python dict or OrderedDict, in insertion order. Keys may be
	// any value (Python allows tuples and ints), so it is not a Go map.
	Dict struct{ Keys, Values []any }
	// Global is a class or function a pickle names; it is never imported or called.
	Global struct{ Module, Name string }
	// Object is what calling or instantiating a Global that torchpickle does
	// not know would have made: kept as its class and arguments, with any
	// items a pickle adds to it, so the rest of the file still reads.
	Object struct {
		Class Global
		Args  []any
		Dict  Dict
		List  []any
	}
)

// Get returns the value of a string key.
func (d *Dict) Get(key string) (any, bool) {
	for i, k := range d.Keys {
		if s, ok := k.(string); ok && s == key {
			return d.Values[i], true
		}
	}
	return nil, false
}

func (d *Dict) set(k, v any) {
	d.Keys = append(d.Keys, k)
	d.Values = append(d.Values, v)
}

// errStop ends a pickle.
var errStop = errors.New("stop")

// source is the pickle's bytes with how many remain, so that no length a
// file claims is allocated before the bytes are known to be there.
type source struct {
	r    *bufio.Reader
	left int64
}

func (s *source) byte() (byte, error) {
	if s.left < 1 {
		return 0, io.ErrUnexpectedEOF
	}
	b, err := s.r.ReadByte()
	if err != nil {
		return 0, unexpected(err)
	}
	s.left--
	return b, nil
}

func (s *source) bytes(n int64) ([]byte, error) {
	if n < 0 || n > s.left {
		return nil, fmt.Errorf("a length of %d bytes with %d left", n, s.left)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(s.r, b); err != nil {
		return nil, unexpected(err)
	}
	s.left -= n
	return b, nil
}

func (s *source) uint(n int) (uint64, error) {
	b, err := s.bytes(int64(n))
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
}

// line reads up to a newline (the text opcodes), at most 256 bytes.
func (s *source) line() (string, error) {
	var sb strings.Builder
	for sb.Len() <= 256 {
		b, err := s.byte()
		if err != nil {
			return "", err
		}
		if b == '\n' {
			return sb.String(), nil
		}
		sb.WriteByte(b)
	}
	return "", errors.New("a text argument longer than 256 bytes")
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// machine runs one pickle: the stack, the marks and the memo. It implements
// the opcodes of protocols 0-5 that data (not code) needs; every object
// construction is one of the few torch.save uses or an inert Object.
type machine struct {
	src     *source
	stack   []any
	marks   []int
	memo    map[uint64]any
	persist func(pid any) (any, error)
}

func (m *machine) push(v any) { m.stack = append(m.stack, v) }

func (m *machine) pop() (any, error) {
	if len(m.stack) == 0 || (len(m.marks) > 0 && len(m.stack) == m.marks[len(m.marks)-1]) {
		return nil, errors.New("pop from an empty stack")
	}
	v := m.stack[len(m.stack)-1]
	m.stack = m.stack[:len(m.stack)-1]
	return v, nil
}

func (m *machine) top() (any, error) {
	if len(m.stack) == 0 || (len(m.marks) > 0 && len(m.stack) == m.marks[len(m.marks)-1]) {
		return nil, errors.New("no value on the stack")
	}
	return m.stack[len(m.stack)-1], nil
}

// popMark returns the values pushed since the last mark and removes them.
func (m *machine) popMark() ([]any, error) {
	if len(m.marks) == 0 {
		return nil, errors.New("no mark on the stack")
	}
	at := m.marks[len(m.marks)-1]
	m.marks = m.marks[:len(m.marks)-1]
	items := append([]any(nil), m.stack[at:]...)
	m.stack = m.stack[:at]
	return items, nil
}

// run executes opcodes until STOP and returns the value left on the stack.
func (m *machine) run() (any, error) {
	for {
		at := m.src.left
		op, err := m.src.byte()
		if err != nil {
			return nil, err
		}
		if err := m.step(op); err != nil {
			if err == errStop {
				if len(m.stack) != 1 || len(m.marks) != 0 {
					return nil, fmt.Errorf("pickle ends with %d values and %d marks on the stack", len(m.stack), len(m.marks))
				}
				return m.stack[0], nil
			}
			return nil, fmt.Errorf("opcode %q, %d bytes before the end: %w", op, at, err)
		}
	}
}

func (m *machine) textInt() error {
	l, err := m.src.line()
	if err != nil {
		return err
	}
	l = strings.TrimSuffix(l, "L")
	switch l {
	case "00":
		m.push(false)
		return nil
	case "01":
		m.push(true)
		return nil
	}
	if v, err := strconv.ParseInt(l, 10, 64); err == nil {
		m.push(v)
		return nil
	}
	b, ok := new(big.Int).SetString(l, 10)
	if !ok {
		return fmt.Errorf("integer %q", l)
	}
	m.push(b)
	return nil
}

// long decodes a little-endian two's-complement integer of n bytes.
func (m *machine) long(n int64) error {
	if n < 0 {
		return fmt.Errorf("integer of %d bytes", n)
	}
	b, err := m.src.bytes(n)
	if err != nil {
		return err
	}
	if n <= 8 {
		var v int64
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | int64(b[i])
		}
		if n > 0 && n < 8 && b[n-1]&0x80 != 0 { // sign-extend
			v -= 1 << (8 * uint(n))
		}
		m.push(v)
		return nil
	}
	be := make([]byte, n)
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	v := new(big.Int).SetBytes(be)
	if b[n-1]&0x80 != 0 {
		v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*n)))
	}
	m.push(v)
	return nil
}

func (m *machine) sized(op byte) error {
	s := m.src
	var n uint64
	var err error
	switch op {
	case 0x8c, 'U', 'C': // SHORT_BINUNICODE, SHORT_BINSTRING, SHORT_BINBYTES
		n, err = s.uint(1)
	case 'X', 'T', 'B': // BINUNICODE, BINSTRING, BINBYTES
		n, err = s.uint(4)
	default: // BINUNICODE8, BINBYTES8, BYTEARRAY8
		n, err = s.uint(8)
	}
	if err != nil {
		return err
	}
	if n > math.MaxInt64 {
		return fmt.Errorf("a length of %d bytes", n)
	}
	b, err := s.bytes(int64(n))
	if err != nil {
		return err
	}
	switch op {
	case 'X', 0x8c, 0x8d, 'T', 'U':
		m.push(string(b))
	default:
		m.push(b)
	}
	return nil
}

// memoIndex reads a memo opcode's index: a text line (PUT, GET), one byte
// (BINPUT, BINGET) or four (LONG_BINPUT, LONG_BINGET).
func (m *machine) memoIndex(op byte) (uint64, error) {
	switch op {
	case 'p', 'g':
		l, err := m.src.line()
		if err != nil {
			return 0, err
		}
		return strconv.ParseUint(l, 10, 32)
	case 'q', 'h':
		return m.src.uint(1)
	}
	return m.src.uint(4)
}

func (m *machine) put(i uint64) error {
	v, err := m.top()
	if err != nil {
		return err
	}
	m.memo[i] = v
	return nil
}

func (m *machine) get(i uint64) error {
	v, ok := m.memo[i]
	if !ok {
		return fmt.Errorf("memo %d was never stored", i)
	}
	m.push(v)
	return nil
}

func (m *machine) extend(items []any) error {
	v, err := m.top()
	if err != nil {
		return err
	}
	switch l := v.(type) {
	case *List:
		l.Items = append(l.Items, items...)
	case *Object:
		l.List = append(l.List, items...)
	default:
		return fmt.Errorf("append to %T", v)
	}
	return nil
}

func (m *machine) setItems(items []any) error {
	v, err := m.top()
	if err != nil {
		return err
	}
	switch d := v.(type) {
	case *Dict:
		return setItems(d, items)
	case *Object:
		return setItems(&d.Dict, items)
	default:
		return fmt.Errorf("set items of %T", v)
	}
}

func setItems(d *Dict, items []any) error {
	if len(items)%2 != 0 {
		return fmt.Errorf("%d values for key-value pairs", len(items))
	}
	for i := 0; i < len(items); i += 2 {
		d.set(items[i], items[i+1])
	}
	return nil
}

func (m *machine) newObject(cls, args any) error {
	g, ok := cls.(Global)
	if !ok {
		return fmt.Errorf("instantiate %T", cls)
	}
	t, ok := args.(Tuple)
	if !ok {
		return fmt.Errorf("arguments of %s.%s are a %T", g.Module, g.Name, args)
	}
	if g == orderedDict {
		m.push(&Dict{})
		return nil
	}
	m.push(&Object{Class: g, Args: t})
	return nil
}
