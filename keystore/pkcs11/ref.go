package pkcs11

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// MaxURIBytes is the length of the longest URI a [Ref] may hold.
const MaxURIBytes = 4096

// ErrNoCGO is what [Open] returns in a build without cgo.
var ErrNoCGO = errors.New("pkcs11: this tokenbroker was built without cgo; PKCS#11 keys need CGO_ENABLED=1")

// Ref names a private key inside a PKCS#11 token: the token and the key, the
// module that reaches the token and the file that holds the token's PIN.
type Ref struct {
	// URI is an RFC 7512 "pkcs11:" URI of at most [MaxURIBytes] bytes, such
	// as "pkcs11:token=broker;object=tenant-a". Its path attributes select
	// the token (token, serial, slot-id, manufacturer, model; also
	// slot-description, slot-manufacturer, library-manufacturer,
	// library-description and library-version) and the key (object, its
	// CKA_LABEL, and id, its CKA_ID, percent-encoded bytes): at least one of
	// object and id is required, and type, if present, must be private. Its
	// query may hold module-path and pin-source (a file path, absolute, or a
	// file: URI) in place of Module and PINFile; pin-value is refused, the
	// PIN belongs in a file. Vendor attributes ("x-…") are ignored, any
	// other attribute is refused.
	URI string
	// Module is the path of the PKCS#11 module, a shared library such as
	// /usr/lib/softhsm/libsofthsm2.so. Empty means the URI's module-path;
	// if both are set they must name the same path.
	Module string
	// PINFile is the path of the file holding the token's user PIN, which
	// group and others must not be able to read (as a private key file);
	// one trailing "\n" or "\r\n" is not part of the PIN. Empty means the
	// URI's pin-source; if both are set they must name the same path.
	PINFile string
}

// ParseRef checks ref without loading its module, reading its PIN file or
// touching the token, as configuration validation needs. It returns ref with
// Module and PINFile completed from the URI's module-path and pin-source.
// Its errors say what to fix, name attributes but never repeat a pin-value.
func ParseRef(ref Ref) (Ref, error) {
	t, err := parseRef(ref)
	if err != nil {
		return Ref{}, err
	}
	return Ref{URI: ref.URI, Module: t.module, PINFile: t.pinFile}, nil
}

// The RFC 7512 attributes, by the part of the URI they belong in.
const (
	attrToken        = "token"
	attrManufacturer = "manufacturer"
	attrSerial       = "serial"
	attrModel        = "model"
	attrLibManuf     = "library-manufacturer"
	attrLibDesc      = "library-description"
	attrLibVersion   = "library-version"
	attrSlotDesc     = "slot-description"
	attrSlotManuf    = "slot-manufacturer"
	attrSlotID       = "slot-id"
	attrObject       = "object"
	attrID           = "id"
	attrType         = "type"

	attrPINSource  = "pin-source"
	attrPINValue   = "pin-value"
	attrModuleName = "module-name"
	attrModulePath = "module-path"
)

// pathAttrs are the path attributes in the order messages list them: those
// that select the library, the slot and the token, then the key's.
var pathAttrs = []string{
	attrLibManuf, attrLibDesc, attrLibVersion,
	attrSlotManuf, attrSlotDesc, attrSlotID,
	attrManufacturer, attrModel, attrSerial, attrToken,
	attrObject, attrID, attrType,
}

// queryAttrs are the query attributes.
var queryAttrs = []string{attrPINSource, attrPINValue, attrModuleName, attrModulePath}

// errPINValue is the refusal of a pin-value attribute; it never shows the
// value.
var errPINValue = errors.New("pkcs11: uri: pin-value is not accepted, as it would put the PIN in the configuration; put the PIN in a file only its owner can read and name that file in the key's PIN file setting (or in pin-source)")

// target is a checked Ref: the decoded attributes of its URI and the module
// and PIN file it resolves to.
type target struct {
	module  string
	pinFile string
	// attrs are the URI's decoded path attributes, vendor ones left out.
	attrs map[string]string
	// slotID and libVersion are the slot-id and library-version attributes,
	// parsed, when attrs has them.
	slotID     uint64
	libVersion [2]uint8
}

// has reports whether the URI has the path attribute name.
func (t *target) has(name string) bool {
	_, ok := t.attrs[name]
	return ok
}

// keyAttrs are the attributes that match the key object: object (the
// label) and id, nil when absent.
func (t *target) keyAttrs() (label, id []byte) {
	if v, ok := t.attrs[attrObject]; ok {
		label = []byte(v)
	}
	if v, ok := t.attrs[attrID]; ok {
		id = []byte(v)
	}
	return label, id
}

// describe writes the URI's path attributes among names, in canonical form,
// for messages: "pkcs11:token=broker;object=tenant-a".
func (t *target) describe(names ...string) string {
	var b strings.Builder
	b.WriteString("pkcs11:")
	first := true
	for _, name := range pathAttrs {
		v, ok := t.attrs[name]
		if !ok || (len(names) > 0 && !slices.Contains(names, name)) {
			continue
		}
		if !first {
			b.WriteByte(';')
		}
		first = false
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(escape(v, name == attrID))
	}
	return b.String()
}

// parseRef checks ref and decodes its URI.
func parseRef(ref Ref) (*target, error) {
	uri := ref.URI
	switch {
	case uri == "":
		return nil, errors.New("pkcs11: no URI: name the key with an RFC 7512 URI such as pkcs11:token=broker;object=tenant-key")
	case len(uri) > MaxURIBytes:
		return nil, fmt.Errorf("pkcs11: uri: %d bytes long, at most %d are accepted", len(uri), MaxURIBytes)
	case !strings.HasPrefix(uri, "pkcs11:"):
		return nil, errors.New("pkcs11: uri: must begin with pkcs11: (an RFC 7512 PKCS#11 URI, such as pkcs11:token=broker;object=tenant-key)")
	}
	path, query, hasQuery := strings.Cut(uri[len("pkcs11:"):], "?")
	t := &target{attrs: map[string]string{}}
	if path != "" {
		for part := range strings.SplitSeq(path, ";") {
			if err := t.pathAttribute(part); err != nil {
				return nil, err
			}
		}
	}
	q := map[string]string{}
	if hasQuery && query != "" {
		for part := range strings.SplitSeq(query, "&") {
			if err := queryAttribute(q, part); err != nil {
				return nil, err
			}
		}
	}
	if err := t.check(); err != nil {
		return nil, err
	}
	var err error
	if t.module, err = resolve(ref.Module, q, attrModulePath, "module", "the PKCS#11 module (a .so file)"); err != nil {
		return nil, err
	}
	if t.pinFile, err = resolve(ref.PINFile, q, attrPINSource, "PIN file", "the file holding the token's user PIN"); err != nil {
		return nil, err
	}
	return t, nil
}

// pathAttribute decodes one attribute of the URI's path into t.
func (t *target) pathAttribute(part string) error {
	name, value, err := splitAttribute(part, "path", ";")
	if err != nil {
		return err
	}
	switch {
	case strings.HasPrefix(name, "x-"):
		// A vendor attribute: RFC 7512 lets a consumer ignore those it does
		// not know, but not malformed ones.
		if _, err := decode(value, false); err != nil {
			return fmt.Errorf("pkcs11: uri: %s %w", name, err)
		}
		return nil
	case slices.Contains(queryAttrs, name):
		return fmt.Errorf("pkcs11: uri: %s is a query attribute: put it after a ?, as in pkcs11:object=key?%s=…", name, name)
	case !slices.Contains(pathAttrs, name):
		return fmt.Errorf("pkcs11: uri: unknown attribute %q; the path may hold %s, and vendor attributes beginning with x-",
			name, strings.Join(pathAttrs, ", "))
	}
	if _, dup := t.attrs[name]; dup {
		return fmt.Errorf("pkcs11: uri: %s appears twice", name)
	}
	v, err := decode(value, false)
	if err != nil {
		return fmt.Errorf("pkcs11: uri: %s %w", name, err)
	}
	if v == "" {
		return fmt.Errorf("pkcs11: uri: %s is empty; give it a value or leave it out", name)
	}
	t.attrs[name] = v
	return nil
}

// queryAttribute decodes one attribute of the URI's query into q.
func queryAttribute(q map[string]string, part string) error {
	name, value, err := splitAttribute(part, "query", "&")
	if err != nil {
		return err
	}
	switch {
	case name == attrModuleName:
		return errors.New("pkcs11: uri: module-name is not supported: give the module's path in the key's module setting (or in module-path)")
	case strings.HasPrefix(name, "x-"):
		if _, err := decode(value, true); err != nil {
			return fmt.Errorf("pkcs11: uri: %s %w", name, err)
		}
		return nil
	case slices.Contains(pathAttrs, name):
		return fmt.Errorf("pkcs11: uri: %s is a path attribute: put it before the ?, as in pkcs11:%s=…;object=key", name, name)
	case !slices.Contains(queryAttrs, name):
		return fmt.Errorf("pkcs11: uri: unknown query attribute %q; the query may hold module-path and pin-source, and vendor attributes beginning with x-", name)
	}
	if _, dup := q[name]; dup {
		return fmt.Errorf("pkcs11: uri: %s appears twice", name)
	}
	v, err := decode(value, true)
	if err != nil {
		return fmt.Errorf("pkcs11: uri: %s %w", name, err)
	}
	if v == "" {
		return fmt.Errorf("pkcs11: uri: %s is empty; give it a value or leave it out", name)
	}
	q[name] = v
	return nil
}

// maxNameBytes bounds the attribute names messages repeat.
const maxNameBytes = 64

// splitAttribute splits "name=value". Its errors repeat the name only when it
// is well formed, and never the value.
func splitAttribute(part, where, sep string) (name, value string, err error) {
	if part == "" {
		return "", "", fmt.Errorf("pkcs11: uri: empty attribute in the %s (two %s in a row, or one at the end)", where, sep)
	}
	name, value, ok := strings.Cut(part, "=")
	switch {
	case name == attrPINValue:
		return "", "", errPINValue
	case !ok || !validName(name):
		// Do not repeat the part: it may be a PIN pasted in the wrong place.
		return "", "", fmt.Errorf("pkcs11: uri: malformed attribute in the %s: each must be name=value, the name made of letters, digits, - and _", where)
	case len(name) > maxNameBytes:
		return "", "", fmt.Errorf("pkcs11: uri: unknown attribute %.*q… (%d bytes long)", maxNameBytes, name, len(name))
	}
	return name, value, nil
}

// validName reports whether name is an RFC 7512 attribute name: letters,
// digits, - and _.
func validName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isAlnum(c) && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// allowed reports whether c may appear unencoded in an attribute value: in
// the path (RFC 7512 pk11-pchar) or in the query (pk11-qchar).
func allowed(c byte, query bool) bool {
	if isAlnum(c) {
		return true
	}
	switch c {
	case '-', '.', '_', '~', // unreserved
		':', '[', ']', '@', '!', '$', '\'', '(', ')', '*', '+', ',', '=': // pk11-res-avail
		return true
	case '&':
		return !query
	case '/', '?', '|':
		return query
	}
	return false
}

// decode percent-decodes an attribute value, refusing characters RFC 7512
// wants encoded. Its errors complete "<attribute> …" and do not repeat the
// value.
func decode(s string, query bool) (string, error) {
	if !strings.Contains(s, "%") {
		for i := 0; i < len(s); i++ {
			if !allowed(s[i], query) {
				return "", errNotEncoded
			}
		}
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", errors.New("has a % not followed by two hex digits")
			}
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		case allowed(c, query):
			b = append(b, c)
		default:
			return "", errNotEncoded
		}
	}
	return string(b), nil
}

var errNotEncoded = errors.New("has a character that must be percent-encoded (such as a space, written %20, or ; written %3B)")

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// escape percent-encodes a value for a URI path, every byte when all is set
// (as is usual for id).
func escape(v string, all bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !all && c != '%' && allowed(c, false) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0xf])
	}
	return b.String()
}

// check validates the attributes' values and that the URI names a private
// key.
func (t *target) check() error {
	if v, ok := t.attrs[attrType]; ok && v != "private" {
		return fmt.Errorf("pkcs11: uri: type=%.16q, but the broker signs with a private key: write type=private or leave type out", v)
	}
	if !t.has(attrObject) && !t.has(attrID) {
		return errors.New("pkcs11: uri: names no key: add object=<the key's label> or id=<its CKA_ID, percent-encoded>, as in pkcs11:token=broker;object=tenant-key")
	}
	if v, ok := t.attrs[attrSlotID]; ok {
		n, err := parseDigits(v, 64)
		if err != nil {
			return fmt.Errorf("pkcs11: uri: slot-id %w", err)
		}
		t.slotID = n
	}
	if v, ok := t.attrs[attrLibVersion]; ok {
		major, minor, hasMinor := strings.Cut(v, ".")
		maj, err := parseDigits(major, 8)
		if err == nil && hasMinor {
			var m uint64
			m, err = parseDigits(minor, 8)
			t.libVersion[1] = uint8(m)
		}
		if err != nil {
			return errors.New("pkcs11: uri: library-version must be a version such as 2 or 2.6, each number at most 255")
		}
		t.libVersion[0] = uint8(maj)
	}
	return nil
}

// parseDigits parses a decimal number of at most bits bits, digits only.
func parseDigits(s string, bits int) (uint64, error) {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("must be a decimal number")
		}
	}
	n, err := strconv.ParseUint(s, 10, bits)
	if err != nil {
		return 0, errors.New("is out of range")
	}
	return n, nil
}

// resolve returns the path a Ref field gives (field) or the URI's query
// attribute attr gives, refusing both when they differ and neither.
func resolve(field string, q map[string]string, attr, what, means string) (string, error) {
	fromURI, ok := q[attr]
	if ok && attr == attrPINSource {
		var err error
		if fromURI, err = pinSourcePath(fromURI); err != nil {
			return "", err
		}
	}
	if ok && !filepath.IsAbs(fromURI) {
		return "", fmt.Errorf("pkcs11: uri: %s must be an absolute path, got %q", attr, fromURI)
	}
	switch {
	case field != "" && ok && filepath.Clean(field) != filepath.Clean(fromURI):
		return "", fmt.Errorf("pkcs11: the %s %q and the URI's %s %q differ: give it once", what, field, attr, fromURI)
	case field != "":
		return field, nil
	case ok:
		return fromURI, nil
	}
	return "", fmt.Errorf("pkcs11: no %s: give the path of %s, in the key's settings or as %s in the URI", what, means, attr)
}

// pinSourcePath turns a pin-source into a file path: it is one already, or a
// file: URI without a host.
func pinSourcePath(v string) (string, error) {
	rest, isURI := strings.CutPrefix(v, "file:")
	if !isURI {
		if !filepath.IsAbs(v) {
			return "", errors.New("pkcs11: uri: pin-source must be the absolute path of the PIN file, or a file: URI (file:/path or file:///path)")
		}
		return v, nil
	}
	if after, ok := strings.CutPrefix(rest, "//"); ok {
		if !strings.HasPrefix(after, "/") {
			return "", errors.New("pkcs11: uri: pin-source: a file: URI with a host is not supported; write file:/path or file:///path")
		}
		rest = after
	}
	return rest, nil
}
