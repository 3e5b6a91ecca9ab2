package tfjs

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits on a JavaScript literal, so that a hostile file cannot make the
// parser recurse or allocate without bound.
const (
	maxDepth = 256
	maxItems = 1 << 22 // values in one literal
)

// parseLiteral reads one JavaScript value written as a literal, as a
// minifier leaves it: objects with bare or quoted keys, arrays, strings in
// double or single quotes, numbers such as .5, -0 or 1963169733975448e-20,
// !0 and !1 for true and false, null and void 0. It runs no code. It
// returns the value (map[string]any, []any, string, float64, bool or nil)
// and the bytes after it.
func parseLiteral(src string) (any, string, error) {
	p := &literalParser{src: src}
	v, err := p.value(0)
	if err != nil {
		return nil, "", fmt.Errorf("javascript literal at byte %d: %w", p.pos, err)
	}
	return v, p.src[p.pos:], nil
}

type literalParser struct {
	src   string
	pos   int
	items int
}

func (p *literalParser) space() {
	for p.pos < len(p.src) {
		switch p.src[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *literalParser) value(depth int) (any, error) {
	if depth > maxDepth {
		return nil, errors.New("nested too deeply")
	}
	if p.items++; p.items > maxItems {
		return nil, errors.New("too many values")
	}
	p.space()
	if p.pos >= len(p.src) {
		return nil, errors.New("unexpected end")
	}
	switch c := p.src[p.pos]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"' || c == '\'':
		return p.str()
	case c == '!':
		// A minifier writes true as !0 and false as !1.
		if p.pos+1 < len(p.src) {
			switch p.src[p.pos+1] {
			case '0':
				p.pos += 2
				return true, nil
			case '1':
				p.pos += 2
				return false, nil
			}
		}
		return nil, errors.New("unsupported expression after '!'")
	case c == '-' || c == '+' || c == '.' || (c >= '0' && c <= '9'):
		return p.number()
	}
	for _, w := range []struct {
		word string
		v    any
	}{{"true", true}, {"false", false}, {"null", nil}, {"void 0", nil}, {"undefined", nil}} {
		if strings.HasPrefix(p.src[p.pos:], w.word) {
			p.pos += len(w.word)
			return w.v, nil
		}
	}
	return nil, fmt.Errorf("unexpected %q", p.src[p.pos])
}

func (p *literalParser) object(depth int) (any, error) {
	p.pos++ // {
	out := map[string]any{}
	for {
		p.space()
		if p.pos >= len(p.src) {
			return nil, errors.New("unterminated object")
		}
		if p.src[p.pos] == '}' {
			p.pos++
			return out, nil
		}
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		p.space()
		if p.pos >= len(p.src) || p.src[p.pos] != ':' {
			return nil, fmt.Errorf("no ':' after key %q", key)
		}
		p.pos++
		v, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		out[key] = v
		p.space()
		if p.pos < len(p.src) && p.src[p.pos] == ',' {
			p.pos++
		} else if p.pos < len(p.src) && p.src[p.pos] != '}' {
			return nil, fmt.Errorf("expected ',' or '}' after %q", key)
		}
	}
}

func (p *literalParser) key() (string, error) {
	if c := p.src[p.pos]; c == '"' || c == '\'' {
		return p.str()
	}
	start := p.pos
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		if !(c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			break
		}
		p.pos++
	}
	if p.pos == start {
		return "", fmt.Errorf("expected a key, found %q", p.src[p.pos])
	}
	return p.src[start:p.pos], nil
}

func (p *literalParser) array(depth int) (any, error) {
	p.pos++ // [
	out := []any{}
	for {
		p.space()
		if p.pos >= len(p.src) {
			return nil, errors.New("unterminated array")
		}
		if p.src[p.pos] == ']' {
			p.pos++
			return out, nil
		}
		v, err := p.value(depth + 1)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		p.space()
		if p.pos < len(p.src) && p.src[p.pos] == ',' {
			p.pos++
		} else if p.pos < len(p.src) && p.src[p.pos] != ']' {
			return nil, errors.New("expected ',' or ']' in array")
		}
	}
}

func (p *literalParser) str() (string, error) {
	quote := p.src[p.pos]
	p.pos++
	var b strings.Builder
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		switch {
		case c == quote:
			p.pos++
			return b.String(), nil
		case c == '\\':
			if p.pos+1 >= len(p.src) {
				return "", errors.New("unterminated escape")
			}
			e := p.src[p.pos+1]
			p.pos += 2
			switch e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'v':
				b.WriteByte('\v')
			case '0':
				b.WriteByte(0)
			case 'x', 'u':
				n := 2
				if e == 'u' {
					n = 4
				}
				if p.pos+n > len(p.src) {
					return "", errors.New("short escape")
				}
				r, err := strconv.ParseUint(p.src[p.pos:p.pos+n], 16, 32)
				if err != nil {
					return "", fmt.Errorf("bad escape: %w", err)
				}
				b.WriteRune(rune(r))
				p.pos += n
			default:
				b.WriteByte(e) // \" \' \\ \/ and any other character stand for themselves
			}
		default:
			r, size := utf8.DecodeRuneInString(p.src[p.pos:])
			b.WriteRune(r)
			p.pos += size
		}
	}
	return "", errors.New("unterminated string")
}

func (p *literalParser) number() (any, error) {
	start := p.pos
	if c := p.src[p.pos]; c == '-' || c == '+' {
		p.pos++
	}
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		if c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' ||
			((c == '-' || c == '+') && (p.src[p.pos-1] == 'e' || p.src[p.pos-1] == 'E')) {
			p.pos++
			continue
		}
		break
	}
	text := p.src[start:p.pos]
	v, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return nil, fmt.Errorf("bad number %q", text)
	}
	return v, nil
}
