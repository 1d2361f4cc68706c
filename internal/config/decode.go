package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// The raw structs mirror the YAML; their yaml tags are the only field names
// accepted. Optional scalars are pointers, so that an absent (or null) field,
// which takes its default, differs from an empty one, which is an error.
// Durations stay strings until validation.
type rawConfig struct {
	Listen        rawListen     `yaml:"listen"`
	ShutdownGrace *string       `yaml:"shutdown_grace"`
	TLS           *rawTLS       `yaml:"tls"`
	Audit         *rawAudit     `yaml:"audit"`
	RateLimit     *rawRateLimit `yaml:"rate_limit"`
	Cache         rawCache      `yaml:"cache"`
	Tenants       []rawTenant   `yaml:"tenants"`
	Callers       []rawCaller   `yaml:"callers"`
}

type rawListen struct {
	GRPC *string `yaml:"grpc"`
	HTTP *string `yaml:"http"`
}

type rawTLS struct {
	CertFile     string  `yaml:"cert_file"`
	KeyFile      string  `yaml:"key_file"`
	ClientCAFile *string `yaml:"client_ca_file"`
}

type rawAudit struct {
	File       string `yaml:"file"`
	FailClosed bool   `yaml:"fail_closed"`
	Queue      *int   `yaml:"queue"`
}

type rawRateLimit struct {
	Rate  *float64 `yaml:"rate"`
	Burst *int     `yaml:"burst"`
}

type rawCache struct {
	Skew            *string    `yaml:"skew"`
	RefreshFraction *float64   `yaml:"refresh_fraction"`
	MaxEntries      *int       `yaml:"max_entries"`
	NegativeTTL     *string    `yaml:"negative_ttl"`
	Shared          *rawShared `yaml:"shared"`
}

type rawShared struct {
	Redis                      *rawRedis `yaml:"redis"`
	EncryptionKeyFile          string    `yaml:"encryption_key_file"`
	PreviousEncryptionKeyFiles []string  `yaml:"previous_encryption_key_files"`
}

type rawRedis struct {
	Addr         *string      `yaml:"addr"`
	Sentinel     *rawSentinel `yaml:"sentinel"`
	Username     *string      `yaml:"username"`
	PasswordFile *string      `yaml:"password_file"`
	DB           *int         `yaml:"db"`
	Timeout      *string      `yaml:"timeout"`
	TLS          *rawRedisTLS `yaml:"tls"`
}

type rawSentinel struct {
	Master       *string  `yaml:"master"`
	Addrs        []string `yaml:"addrs"`
	Username     *string  `yaml:"username"`
	PasswordFile *string  `yaml:"password_file"`
}

type rawRedisTLS struct {
	CAFile     *string `yaml:"ca_file"`
	CertFile   *string `yaml:"cert_file"`
	KeyFile    *string `yaml:"key_file"`
	ServerName *string `yaml:"server_name"`
}

type rawTenant struct {
	ID                    string       `yaml:"id"`
	Upstream              *rawUpstream `yaml:"upstream"`
	Issuer                *string      `yaml:"issuer"`
	Subject               *string      `yaml:"subject"`
	Audience              *string      `yaml:"audience"`
	KeyFile               *string      `yaml:"key_file"`
	AssertionLifetime     *string      `yaml:"assertion_lifetime"`
	UIDMode               *string      `yaml:"uid_mode"`
	KeyID                 *string      `yaml:"key_id"`
	Alg                   *string      `yaml:"alg"`
	KeyPassphraseFile     *string      `yaml:"key_passphrase_file"`
	KeyPassphraseEnv      *string      `yaml:"key_passphrase_env"`
	AllowGroupReadableKey bool         `yaml:"allow_group_readable_key"`
	Keys                  []rawKey     `yaml:"keys"`
}

type rawKey struct {
	State              *string    `yaml:"state"`
	File               *string    `yaml:"file"`
	PKCS11             *rawPKCS11 `yaml:"pkcs11"`
	KeyID              *string    `yaml:"key_id"`
	PassphraseFile     *string    `yaml:"passphrase_file"`
	PassphraseEnv      *string    `yaml:"passphrase_env"`
	AllowGroupReadable bool       `yaml:"allow_group_readable"`
}

type rawPKCS11 struct {
	URI     string `yaml:"uri"`
	Module  string `yaml:"module"`
	PINFile string `yaml:"pin_file"`
}

type rawUpstream struct {
	Kind              string  `yaml:"kind"`
	TokenURL          *string `yaml:"token_url"`
	Issuer            *string `yaml:"issuer"`
	ClientID          *string `yaml:"client_id"`
	AssertionAudience *string `yaml:"assertion_audience"`
	ClientSecretFile  *string `yaml:"client_secret_file"`
	ClientSecretEnv   *string `yaml:"client_secret_env"`
	Timeout           *string `yaml:"timeout"`
}

type rawCaller struct {
	Name         string        `yaml:"name"`
	APIKeySHA256 *string       `yaml:"api_key_sha256"`
	TLSIdentity  *string       `yaml:"tls_identity"`
	Mode         *string       `yaml:"mode"`
	RateLimit    *rawRateLimit `yaml:"rate_limit"`
	Allow        []rawGrant    `yaml:"allow"`
}

type rawGrant struct {
	Tenant        string   `yaml:"tenant"`
	Groups        []string `yaml:"groups"`
	AccountTokens bool     `yaml:"account_tokens"`
	UIDPattern    *string  `yaml:"uid_pattern"`
	CustomClaims  []string `yaml:"custom_claims"`
	MaxMinTTL     *string  `yaml:"max_min_ttl"`
}

// parser collects the problems of one Parse: first while decoding the YAML
// node tree into the raw structs (syntax, unknown fields, wrong types), then
// while validating the raw values into a Config.
type parser struct {
	baseDir  string
	problems []Problem
	// lines maps the path of every field and list item decoded to its line,
	// so that validation problems can name a line too.
	lines map[string]int
	// bad holds the paths of values of the wrong type: a validation problem
	// at or under one would only repeat it.
	bad map[string]bool
	// budget is how many more nodes decoding may visit. Aliases let a small
	// document name a huge tree; the budget bounds the work.
	budget  int
	merging map[*yaml.Node]bool // mappings being merged with "<<", against cycles
}

func newParser(size int, baseDir string) *parser {
	return &parser{
		baseDir: baseDir,
		lines:   map[string]int{},
		bad:     map[string]bool{},
		budget:  max(100_000, 4*size),
		merging: map[*yaml.Node]bool{},
	}
}

// add records a problem found while decoding, where the line is at hand.
func (p *parser) add(path string, line int, msg string) {
	p.problems = append(p.problems, Problem{Path: path, Line: line, Msg: msg})
}

// fail records a validation problem at path, with the line of path or of
// its nearest ancestor in the document, unless a value at or above path had
// the wrong type.
func (p *parser) fail(path, format string, args ...any) {
	for q := path; ; q = parent(q) {
		if p.bad[q] {
			return
		}
		if q == "" {
			break
		}
	}
	p.add(path, p.lineOf(path), fmt.Sprintf(format, args...))
}

func (p *parser) lineOf(path string) int {
	for ; path != ""; path = parent(path) {
		if l, ok := p.lines[path]; ok {
			return l
		}
	}
	return 0
}

// parent strips the last ".name" or "[i]" from a path.
func parent(path string) string {
	if i := strings.LastIndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return ""
}

// err returns the problems sorted by line, stably, those without a line last.
func (p *parser) err() *Error {
	line := func(pr Problem) int {
		if pr.Line == 0 {
			return math.MaxInt
		}
		return pr.Line
	}
	slices.SortStableFunc(p.problems, func(a, b Problem) int { return cmp.Compare(line(a), line(b)) })
	return &Error{Problems: p.problems}
}

// decodeDocument decodes data into raw structs. It reports false when the
// YAML itself is broken or too big to walk, and there is nothing to validate.
func (p *parser) decodeDocument(data []byte) (*rawConfig, bool) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return &rawConfig{}, true // an empty document
	} else if err != nil {
		p.syntax(err)
		return nil, false
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		p.add("", next.Line, "the config must be a single YAML document, found a second one")
	} else if !errors.Is(err, io.EOF) {
		p.syntax(err)
		return nil, false
	}
	root := &doc
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		root = doc.Content[0]
	}
	var raw rawConfig
	p.decode(root, reflect.ValueOf(&raw).Elem(), "")
	return &raw, p.budget >= 0
}

// syntax records a YAML syntax error, moving "line N:" into Problem.Line.
func (p *parser) syntax(err error) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ": "); ok {
			if l, err := strconv.Atoi(n); err == nil {
				line, msg = l, after
			}
		}
	}
	p.add("", line, "invalid YAML: "+strings.ReplaceAll(msg, "\n", " "))
}

// spend takes one node from the budget, reporting once when it runs out.
func (p *parser) spend() bool {
	p.budget--
	if p.budget == -1 {
		p.add("", 0, "the document has too many nodes or aliases")
		p.bad[""] = true
	}
	return p.budget >= 0
}

// decode stores the node n, found at path, into v.
func (p *parser) decode(n *yaml.Node, v reflect.Value, path string) {
	if !p.spend() {
		return
	}
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == 0 || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // absent: v keeps its zero value
	}
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		p.decode(n, v.Elem(), path)
	case reflect.Struct:
		p.mapping(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			p.wrongType(n, path, "a list")
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			ip := fmt.Sprintf("%s[%d]", path, i)
			p.lines[ip] = item.Line
			p.decode(item, s.Index(i), ip)
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			p.wrongType(n, path, "a string")
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		// Strict: yaml would also take yes/no/on/off into a bool.
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(v.Addr().Interface()) != nil {
			p.wrongType(n, path, "true or false")
		}
	case reflect.Int:
		// Strict: yaml would also take 1.5 into an int, as 1.
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(v.Addr().Interface()) != nil {
			p.wrongType(n, path, "an integer")
		}
	case reflect.Float64:
		// Strict: a quoted "50" is a string, as for booleans.
		if tag := n.ShortTag(); n.Kind != yaml.ScalarNode || tag != "!!int" && tag != "!!float" || n.Decode(v.Addr().Interface()) != nil {
			p.wrongType(n, path, "a number")
		}
	default: // for fields to come
		if n.Kind != yaml.ScalarNode || n.Decode(v.Addr().Interface()) != nil {
			p.wrongType(n, path, "a "+v.Type().String())
		}
	}
}

func (p *parser) wrongType(n *yaml.Node, path, want string) {
	p.bad[path] = true
	what := "must be"
	if path == "" {
		what = "the config must be"
	}
	p.add(path, n.Line, fmt.Sprintf("%s %s, got %s", what, want, describe(n)))
}

// describe names a node's type without its value, which may be a secret.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch n.ShortTag() {
	case "!!str":
		return "a string"
	case "!!int", "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	}
	return "a scalar"
}

// mapping decodes a mapping node into the struct v, reporting every key
// that no yaml tag of v names.
func (p *parser) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		p.wrongType(n, path, "a mapping")
		return
	}
	seen := map[string]int{} // name → line
	for _, f := range p.fields(n, path) {
		name := f.key.Value
		fp := join(path, name)
		i := fieldIndex(v.Type(), name)
		if i < 0 {
			p.add(fp, f.key.Line, "unknown field")
			continue
		}
		if first, dup := seen[name]; dup {
			if !f.merged { // a merged field is overridden, not repeated
				p.add(fp, f.key.Line, fmt.Sprintf("repeated field (first at line %d)", first))
			}
			continue
		}
		seen[name] = f.key.Line
		p.lines[fp] = f.key.Line
		p.decode(f.value, v.Field(i), fp)
	}
}

// field is one key/value pair of a mapping.
type field struct {
	key, value *yaml.Node
	merged     bool // came from a "<<" merge
}

// fields lists a mapping's pairs: its own first, then those it merges in
// with "<<" (which its own override, as YAML merge keys do).
func (p *parser) fields(n *yaml.Node, path string) []field {
	var own, merged []field
	for i := 0; i+1 < len(n.Content) && p.spend(); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge":
			merged = append(merged, p.merge(v, path, k.Line)...)
		case k.Kind == yaml.ScalarNode:
			own = append(own, field{key: k, value: v})
		default:
			p.add(path, k.Line, "has a key that is not a string")
		}
	}
	for i := range merged {
		merged[i].merged = true
	}
	return append(own, merged...)
}

// merge lists the pairs of the value of a "<<" key at line: a mapping or a
// list of mappings, where earlier ones win.
func (p *parser) merge(v *yaml.Node, path string, line int) []field {
	for v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	at := "<<"
	if path != "" {
		at = path + ".<<"
	}
	switch v.Kind {
	case yaml.MappingNode:
		if p.merging[v] {
			p.add(at, line, "merges a mapping into itself")
			return nil
		}
		p.merging[v] = true
		defer delete(p.merging, v)
		return p.fields(v, path)
	case yaml.SequenceNode:
		var fs []field
		for _, item := range v.Content {
			for item.Kind == yaml.AliasNode && item.Alias != nil {
				item = item.Alias
			}
			if item.Kind != yaml.MappingNode {
				p.add(at, line, "must be a mapping or a list of mappings")
				continue
			}
			fs = append(fs, p.merge(item, path, line)...)
		}
		return fs
	}
	p.add(at, line, "must be a mapping or a list of mappings")
	return nil
}

// fieldIndex returns the index of the field of struct type t whose yaml tag
// is name, or -1.
func fieldIndex(t reflect.Type, name string) int {
	for i := range t.NumField() {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag == name {
			return i
		}
	}
	return -1
}

// join appends a field name to a path, quoting a name that is not a plain
// word so that a problem stays on one line.
func join(path, name string) string {
	plain := name != "" && len(name) <= 64 && strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-')
	}) < 0
	if !plain {
		name = quote(name)
	}
	if path == "" {
		return name
	}
	return path + "." + name
}

// quote quotes a value for a message, on one line and cut to 256 bytes.
func quote(s string) string {
	const maxLen = 256
	if len(s) <= maxLen {
		return strconv.Quote(s)
	}
	cut := maxLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…"
}
