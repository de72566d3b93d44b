package torchpickle

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
)

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
