package mcp

import (
	"encoding/base64"
	"encoding/json"
	"strings"
)

// Namespacing. On an endpoint that aggregates servers, every name an agent
// sees is qualified by the server id, so that two servers' names can never
// collide and every request routes to exactly one server:
//
//	tool and prompt names:       <server>__<name>          bank__send_money
//	resource URIs and templates: <server>+<uri>            workspace+file:///notes.txt
//
// Server ids match [a-z][a-z0-9-]{0,31}, so they contain neither "__" nor
// "+", the first separator always ends the server id, and "<server>+" keeps
// a URI's scheme valid (RFC 3986 schemes may contain "+"). On an endpoint
// with namespacing off (one server only) names pass through unchanged.
const (
	nameSep = "__"
	uriSep  = "+"
)

func (ep *endpoint) exposeName(server, name string) string {
	if !ep.namespace {
		return name
	}
	return server + nameSep + name
}

// resolveName maps an exposed tool or prompt name to its server and the
// name the server knows.
func (ep *endpoint) resolveName(exposed string) (*upstream, string, bool) {
	if !ep.namespace {
		return ep.servers[0], exposed, true
	}
	i := strings.Index(exposed, nameSep)
	if i <= 0 {
		return nil, "", false
	}
	s, ok := ep.byID[exposed[:i]]
	if !ok || i+len(nameSep) == len(exposed) {
		return nil, "", false
	}
	return s, exposed[i+len(nameSep):], true
}

func (ep *endpoint) exposeURI(server, uri string) string {
	if !ep.namespace {
		return uri
	}
	return server + uriSep + uri
}

func (ep *endpoint) resolveURI(exposed string) (*upstream, string, bool) {
	if !ep.namespace {
		return ep.servers[0], exposed, true
	}
	i := strings.Index(exposed, uriSep)
	if i <= 0 {
		return nil, "", false
	}
	s, ok := ep.byID[exposed[:i]]
	if !ok {
		return nil, "", false
	}
	return s, exposed[i+len(uriSep):], true
}

// listCursor is the gateway's cursor over an aggregated list: the index of
// the server being listed and that server's own cursor.
type listCursor struct {
	Server int    `json:"s"`
	Cursor string `json:"c,omitempty"`
}

func encodeCursor(c listCursor) string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(s string) (listCursor, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return listCursor{}, false
	}
	var c listCursor
	if json.Unmarshal(b, &c) != nil || c.Server < 0 {
		return listCursor{}, false
	}
	return c, true
}
