package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

const (
	// timeLayout is RFC 3339 with all nine fractional digits, so that the
	// times of a trail sort as text.
	timeLayout = "2006-01-02T15:04:05.000000000Z07:00"
	// prevOpen and prevClose surround the prev member; hashOpen and
	// hashClose the hash at the end of a line.
	prevOpen  = `,"prev":"`
	prevClose = `"`
	hashOpen  = `,"hash":"`
	hashClose = "\"}\n"
	// zeroHash is the prev of a chain's first line.
	zeroHash = "0000000000000000000000000000000000000000000000000000000000000000"
	// maxLine bounds the lines Verify and Open read. Real lines are a few
	// hundred bytes; 32 groups of 256 bytes make about 9 KiB.
	maxLine = 1 << 20
)

// wireFields are the members of a line between time and latency_ms, in
// the order of the format.
type wireFields struct {
	Caller            string   `json:"caller"`
	Peer              string   `json:"peer"`
	Tenant            string   `json:"tenant"`
	UID               string   `json:"uid,omitempty"`
	ExternalAccountID string   `json:"external_account_id,omitempty"`
	Groups            []string `json:"groups"`
	Decision          Decision `json:"decision"`
	Reason            string   `json:"reason,omitempty"`
	Cache             string   `json:"cache,omitempty"`
	TokenFP           string   `json:"token_fp,omitempty"`
}

// encoder formats records, reusing its buffers. It is not safe for
// concurrent use.
type encoder struct {
	fields wireFields
	buf    bytes.Buffer
	enc    *json.Encoder
}

func newEncoder() *encoder {
	e := &encoder{}
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}

// appendRecord appends r as the start of a line: the JSON object from its
// "{" through the latency_ms member, for the caller to add prev and hash.
func (e *encoder) appendRecord(dst []byte, r Record) ([]byte, error) {
	groups := r.Groups
	if groups == nil {
		groups = []string{} // "groups":[] rather than null
	}
	e.fields = wireFields{
		Caller:            r.Caller,
		Peer:              r.Peer,
		Tenant:            r.Tenant,
		UID:               r.UID,
		ExternalAccountID: r.ExternalAccountID,
		Groups:            groups,
		Decision:          r.Decision,
		Reason:            r.Reason,
		Cache:             r.Cache,
		TokenFP:           r.TokenFP,
	}
	e.buf.Reset()
	if err := e.enc.Encode(&e.fields); err != nil {
		return dst, err
	}
	mid := e.buf.Bytes() // {"caller":…}\n, never empty: caller is always there
	dst = append(dst, `{"time":"`...)
	dst = r.Time.UTC().AppendFormat(dst, timeLayout)
	dst = append(dst, `",`...)
	dst = append(dst, mid[1:len(mid)-len("}\n")]...)
	dst = append(dst, `,"latency_ms":`...)
	return appendMillis(dst, r.Latency), nil
}

// appendMillis appends d in milliseconds with three decimals, rounded to
// the microsecond.
func appendMillis(dst []byte, d time.Duration) []byte {
	us := d.Round(time.Microsecond).Microseconds()
	if us < 0 {
		dst = append(dst, '-')
		us = -us
	}
	dst = strconv.AppendInt(dst, us/1000, 10)
	frac := us % 1000
	return append(dst, '.', byte('0'+frac/100), byte('0'+frac/10%10), byte('0'+frac%10))
}

// ChainError reports the first line of a trail that breaks the chain.
type ChainError struct {
	// Line counts from 1.
	Line int
	// Reason says what is wrong with the line.
	Reason string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("line %d: %s", e.Line, e.Reason)
}

// Verify reads a trail and checks its chain, as the package documentation
// describes. It returns the number of good lines and, for the first line
// that is not an intact audit line, does not end in a newline, or does not
// carry the previous line's hash as its prev, a *[ChainError]. A failure to
// read r is returned as it is, wrapped.
func Verify(r io.Reader) (int, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	prev := zeroHash
	var line []byte
	for n := 1; ; n++ {
		var err error
		line, err = readLine(br, line[:0])
		switch {
		case err == io.EOF && len(line) == 0:
			return n - 1, nil
		case errors.Is(err, errLineTooLong):
			return n - 1, &ChainError{Line: n, Reason: "longer than 1 MiB"}
		case err == io.EOF:
			return n - 1, &ChainError{Line: n, Reason: "no newline at the end of the line (a torn write?)"}
		case err != nil:
			return n - 1, fmt.Errorf("audit: read line %d: %w", n, err)
		}
		p, h, reason := checkLine(line[:len(line)-1])
		if reason != "" {
			return n - 1, &ChainError{Line: n, Reason: reason}
		}
		if p != prev {
			if n == 1 {
				return 0, &ChainError{Line: 1, Reason: "prev is not 64 zeros, as the first line's must be"}
			}
			return n - 1, &ChainError{Line: n, Reason: fmt.Sprintf("prev does not match line %d's hash", n-1)}
		}
		prev = h
	}
}

var errLineTooLong = errors.New("line too long")

// readLine appends the next line of br, "\n" included, to buf. At the end
// of the input it returns io.EOF with what it read.
func readLine(br *bufio.Reader, buf []byte) ([]byte, error) {
	for {
		frag, err := br.ReadSlice('\n')
		if len(buf)+len(frag) > maxLine {
			return buf, errLineTooLong
		}
		buf = append(buf, frag...)
		if err != bufio.ErrBufferFull {
			return buf, err
		}
	}
}

// checkLine checks a line, without its "\n", on its own: that it is a JSON
// object ending in prev and hash members, and that its hash is what its
// content hashes to. It returns the line's prev and hash, or why not.
func checkLine(line []byte) (prev, hash, reason string) {
	if !json.Valid(line) {
		return "", "", "not valid JSON"
	}
	var v struct {
		Prev *string `json:"prev"`
		Hash *string `json:"hash"`
	}
	if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &v) != nil {
		return "", "", "not a JSON object with string members prev and hash"
	}
	switch {
	case v.Hash == nil:
		return "", "", `no "hash" member`
	case !isHash(*v.Hash):
		return "", "", `"hash" is not 64 lowercase hex digits`
	case !bytes.HasSuffix(line, []byte(hashOpen+*v.Hash+`"}`)):
		return "", "", `"hash" is not the last member`
	case v.Prev == nil:
		return "", "", `no "prev" member`
	case !isHash(*v.Prev):
		return "", "", `"prev" is not 64 lowercase hex digits`
	}
	body := line[:len(line)-len(hashOpen)-len(*v.Hash)-len(`"}`)]
	if pm := `"prev":"` + *v.Prev + `"`; !bytes.HasSuffix(body, []byte(pm)) ||
		(body[len(body)-len(pm)-1] != ',' && body[len(body)-len(pm)-1] != '{') {
		return "", "", `"prev" is not the member before "hash"`
	}
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != *v.Hash {
		return "", "", "hash does not match the line's content"
	}
	return *v.Prev, *v.Hash, ""
}

func isHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// lastHash returns the hash of the last line of an open trail, "" if it
// has none, or an error if the last line is not intact. It reads only the
// file's tail.
func lastHash(f *os.File) (string, error) {
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() || fi.Size() == 0 {
		return "", nil
	}
	line, err := lastLine(f, fi.Size())
	if err != nil {
		return "", err
	}
	_, hash, reason := checkLine(line)
	if reason != "" {
		return "", fmt.Errorf("its last line is not an intact audit line (%s): refusing to continue a broken chain; move the file aside, and keep it as evidence", reason)
	}
	return hash, nil
}

// lastLine reads f backwards from size until it finds the start of the last
// line, and returns that line without its "\n".
func lastLine(f *os.File, size int64) ([]byte, error) {
	var tail []byte
	end, chunk := size, int64(4<<10)
	for {
		start := max(0, end-chunk)
		b := make([]byte, end-start, int64(len(tail))+end-start)
		if _, err := f.ReadAt(b, start); err != nil {
			return nil, err
		}
		tail = append(b, tail...)
		if end == size && tail[len(tail)-1] != '\n' {
			return nil, errors.New("its last line has no newline at its end (a torn write?): refusing to continue a broken chain; move the file aside, and keep it as evidence")
		}
		if i := bytes.LastIndexByte(tail[:len(tail)-1], '\n'); i >= 0 {
			return tail[i+1 : len(tail)-1], nil
		}
		if start == 0 {
			return tail[:len(tail)-1], nil
		}
		if len(tail) > maxLine {
			return nil, errors.New("its last line is longer than 1 MiB: refusing to continue a broken chain")
		}
		end, chunk = start, 2*chunk
	}
}
