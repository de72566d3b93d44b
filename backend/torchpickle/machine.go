package torchpickle

import (
	"bufio"
	"encoding/binary"
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

// step executes one opcode.
//
// codesize:long one switch over the pickle opcodes, a case each, reads best
// as one table.
func (m *machine) step(op byte) error {
	s := m.src
	switch op {
	case 0x80: // PROTO
		v, err := s.byte()
		if err != nil {
			return err
		}
		if v > 5 {
			return fmt.Errorf("pickle protocol %d", v)
		}
	case 0x95: // FRAME: a length hint only
		_, err := s.uint(8)
		return err
	case '.': // STOP
		return errStop
	case '(': // MARK
		m.marks = append(m.marks, len(m.stack))
	case '0': // POP
		_, err := m.pop()
		return err
	case '1': // POP_MARK
		_, err := m.popMark()
		return err
	case '2': // DUP
		v, err := m.top()
		if err != nil {
			return err
		}
		m.push(v)
	case 'N':
		m.push(nil)
	case 0x88: // NEWTRUE
		m.push(true)
	case 0x89: // NEWFALSE
		m.push(false)
	case 'J': // BININT
		v, err := s.uint(4)
		m.push(int64(int32(uint32(v))))
		return err
	case 'K': // BININT1
		v, err := s.uint(1)
		m.push(int64(v))
		return err
	case 'M': // BININT2
		v, err := s.uint(2)
		m.push(int64(v))
		return err
	case 'I', 'L': // INT, LONG (text)
		return m.textInt()
	case 0x8a: // LONG1
		n, err := s.uint(1)
		if err != nil {
			return err
		}
		return m.long(int64(n))
	case 0x8b: // LONG4
		n, err := s.uint(4)
		if err != nil {
			return err
		}
		return m.long(int64(int32(uint32(n))))
	case 'G': // BINFLOAT, big-endian
		b, err := s.bytes(8)
		if err != nil {
			return err
		}
		m.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
	case 'F': // FLOAT (text)
		l, err := s.line()
		if err != nil {
			return err
		}
		f, err := strconv.ParseFloat(l, 64)
		if err != nil {
			return err
		}
		m.push(f)
	case 'X', 0x8c, 0x8d, 'T', 'U', 'B', 'C', 0x8e, 0x96: // strings and bytes with a length
		return m.sized(op)
	case ')': // EMPTY_TUPLE
		m.push(Tuple{})
	case 't': // TUPLE
		items, err := m.popMark()
		if err != nil {
			return err
		}
		m.push(Tuple(items))
	case 0x85, 0x86, 0x87: // TUPLE1, TUPLE2, TUPLE3
		n := int(op-0x85) + 1
		items := make(Tuple, n)
		for i := n - 1; i >= 0; i-- {
			v, err := m.pop()
			if err != nil {
				return err
			}
			items[i] = v
		}
		m.push(items)
	case ']': // EMPTY_LIST
		m.push(&List{})
	case 'l': // LIST
		items, err := m.popMark()
		if err != nil {
			return err
		}
		m.push(&List{Items: items})
	case 'a': // APPEND
		v, err := m.pop()
		if err != nil {
			return err
		}
		return m.extend([]any{v})
	case 'e': // APPENDS
		items, err := m.popMark()
		if err != nil {
			return err
		}
		return m.extend(items)
	case '}': // EMPTY_DICT
		m.push(&Dict{})
	case 'd': // DICT
		items, err := m.popMark()
		if err != nil {
			return err
		}
		d := &Dict{}
		if err := setItems(d, items); err != nil {
			return err
		}
		m.push(d)
	case 's': // SETITEM
		v, err := m.pop()
		if err != nil {
			return err
		}
		k, err := m.pop()
		if err != nil {
			return err
		}
		return m.setItems([]any{k, v})
	case 'u': // SETITEMS
		items, err := m.popMark()
		if err != nil {
			return err
		}
		return m.setItems(items)
	case 0x8f: // EMPTY_SET: kept as a list
		m.push(&List{})
	case 0x90: // ADDITEMS
		items, err := m.popMark()
		if err != nil {
			return err
		}
		return m.extend(items)
	case 0x91: // FROZENSET
		items, err := m.popMark()
		if err != nil {
			return err
		}
		m.push(&List{Items: items})
	case 'c': // GLOBAL "module\nname\n"
		mod, err := s.line()
		if err != nil {
			return err
		}
		name, err := s.line()
		if err != nil {
			return err
		}
		m.push(Global{Module: mod, Name: name})
	case 0x93: // STACK_GLOBAL
		name, err := m.pop()
		if err != nil {
			return err
		}
		mod, err := m.pop()
		if err != nil {
			return err
		}
		ms, ok1 := mod.(string)
		ns, ok2 := name.(string)
		if !ok1 || !ok2 {
			return errors.New("STACK_GLOBAL needs two strings")
		}
		m.push(Global{Module: ms, Name: ns})
	case 'R': // REDUCE
		args, err := m.pop()
		if err != nil {
			return err
		}
		fn, err := m.pop()
		if err != nil {
			return err
		}
		v, err := call(fn, args)
		if err != nil {
			return err
		}
		m.push(v)
	case 0x81: // NEWOBJ
		args, err := m.pop()
		if err != nil {
			return err
		}
		cls, err := m.pop()
		if err != nil {
			return err
		}
		return m.newObject(cls, args)
	case 0x92: // NEWOBJ_EX
		if _, err := m.pop(); err != nil { // kwargs
			return err
		}
		args, err := m.pop()
		if err != nil {
			return err
		}
		cls, err := m.pop()
		if err != nil {
			return err
		}
		return m.newObject(cls, args)
	case 'b': // BUILD: the state of an object; no object here needs it
		if _, err := m.pop(); err != nil {
			return err
		}
		_, err := m.top()
		return err
	case 'p', 'q', 'r': // PUT, BINPUT, LONG_BINPUT
		i, err := m.memoIndex(op)
		if err != nil {
			return err
		}
		return m.put(i)
	case 0x94: // MEMOIZE
		return m.put(uint64(len(m.memo)))
	case 'g', 'h', 'j': // GET, BINGET, LONG_BINGET
		i, err := m.memoIndex(op)
		if err != nil {
			return err
		}
		return m.get(i)
	case 'Q': // BINPERSID
		pid, err := m.pop()
		if err != nil {
			return err
		}
		if m.persist == nil {
			return errors.New("a persistent id where none is expected")
		}
		v, err := m.persist(pid)
		if err != nil {
			return err
		}
		m.push(v)
	default:
		return fmt.Errorf("unsupported opcode 0x%02x", op)
	}
	return nil
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
