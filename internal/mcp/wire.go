package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// JSON-RPC and MCP error codes.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
	// CodeResourceNotFound is MCP's code for an unknown resource URI.
	CodeResourceNotFound = -32002
	// CodeDenied is the gateway's code for a request refused by a control.
	// It sits in the JSON-RPC server-error range (-32000 to -32099).
	CodeDenied = -32050
	// CodeUpstream reports an upstream server that failed or is unreachable.
	CodeUpstream = -32051
	// CodeApprovalRequired reports a request held for human approval.
	CodeApprovalRequired = -32052
	// CodeURLElicitationRequired is MCP's URLElicitationRequiredError
	// (2025-11-25): the request can proceed once the URL-mode elicitations
	// in its data are completed.
	CodeURLElicitationRequired = -32042
)

// Message is one JSON-RPC 2.0 message: a request (Method and ID), a
// notification (Method, no ID) or a response (ID and Result or Error).
//
// ID is kept raw so it is returned exactly as received (number or string).
// Params and Result are raw; the proxy decodes only what it mediates.
type Message struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *WireError      `json:"error,omitempty"`
}

// WireError is a JSON-RPC error object.
type WireError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

func (e *WireError) Error() string { return fmt.Sprintf("jsonrpc error %d: %s", e.Code, e.Message) }

// IsRequest reports whether m is a request.
func (m *Message) IsRequest() bool { return m.Method != "" && len(m.ID) > 0 }

// IsNotification reports whether m is a notification.
func (m *Message) IsNotification() bool { return m.Method != "" && len(m.ID) == 0 }

// IsResponse reports whether m is a response.
func (m *Message) IsResponse() bool { return m.Method == "" && len(m.ID) > 0 }

var errBatch = errors.New("JSON-RPC batches are not supported")

// decodeMessage parses and validates one message from b. b must already
// have passed checkJSON.
func decodeMessage(b []byte) (*Message, *WireError) {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		return nil, &WireError{Code: CodeInvalidRequest, Message: errBatch.Error()}
	}
	m, ok := decodeFast(b)
	if !ok {
		m = &Message{}
		if err := json.Unmarshal(b, m); err != nil {
			return nil, &WireError{Code: CodeInvalidRequest, Message: "invalid JSON-RPC message: " + publicJSONError(err)}
		}
	}
	if err := m.validate(); err != nil {
		return nil, &WireError{Code: CodeInvalidRequest, Message: err.Error()}
	}
	return m, nil
}

func (m *Message) validate() error {
	if m.JSONRPC != "2.0" {
		return errors.New(`invalid JSON-RPC message: "jsonrpc" must be "2.0"`)
	}
	if len(m.ID) > 0 {
		if err := validID(m.ID); err != nil {
			return err
		}
	}
	switch {
	case m.Method != "":
		if m.Result != nil || m.Error != nil {
			return errors.New("invalid JSON-RPC message: a request carries no result or error")
		}
		if len(m.Params) > 0 && m.Params[0] != '{' {
			return errors.New("invalid JSON-RPC message: params must be an object")
		}
	case len(m.ID) > 0:
		if (m.Result == nil) == (m.Error == nil) {
			return errors.New("invalid JSON-RPC message: a response carries exactly one of result and error")
		}
	default:
		return errors.New("invalid JSON-RPC message: neither a request, a notification nor a response")
	}
	return nil
}

// validID accepts a JSON string or integer id; null, fractions, objects and
// booleans are refused.
func validID(id json.RawMessage) error {
	switch {
	case id[0] == '"':
		var s string
		if json.Unmarshal(id, &s) != nil {
			return errors.New("invalid JSON-RPC message: malformed id")
		}
		return nil
	case id[0] == '-' || (id[0] >= '0' && id[0] <= '9'):
		if _, err := strconv.ParseInt(string(id), 10, 64); err != nil {
			return errors.New("invalid JSON-RPC message: id must be a string or an integer")
		}
		return nil
	}
	return errors.New("invalid JSON-RPC message: id must be a string or an integer")
}

// idKey returns a map key for a raw id that distinguishes 1 from "1".
func idKey(id json.RawMessage) string { return string(id) }

func publicJSONError(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at offset %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q has the wrong type", te.Field)
	}
	return "malformed message"
}

// encode marshals m. Messages the proxy builds are always encodable.
func encode(m *Message) []byte {
	m.JSONRPC = "2.0"
	return encodeFast(m)
}

// errorResponse builds an error response to id.
func errorResponse(id json.RawMessage, code int, msg string, data any) *Message {
	e := &WireError{Code: code, Message: msg}
	if data != nil {
		if b, err := json.Marshal(data); err == nil {
			e.Data = b
		}
	}
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	return &Message{JSONRPC: "2.0", ID: id, Error: e}
}

// resultResponse builds a success response to id.
func resultResponse(id json.RawMessage, result any) *Message {
	var raw json.RawMessage
	switch r := result.(type) {
	case json.RawMessage:
		raw = r
	default:
		b, err := json.Marshal(r)
		if err != nil {
			return errorResponse(id, CodeInternalError, "internal error", nil)
		}
		raw = b
	}
	return &Message{JSONRPC: "2.0", ID: id, Result: raw}
}

// params is a generic view of request params: every member kept raw, so
// members the proxy does not mediate pass through unchanged.
type params map[string]json.RawMessage

func parseParams(raw json.RawMessage) (params, error) {
	p := params{}
	if len(raw) == 0 || string(raw) == "null" {
		return p, nil
	}
	if members(raw, func(name string, v []byte) { p[name] = v }) {
		return p, nil
	}
	clear(p)
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, err
	}
	return p, nil
}

func (p params) str(key string) (string, bool) {
	raw, ok := p[key]
	if !ok {
		return "", false
	}
	return unquote(raw)
}

func (p params) setStr(key, val string) { p[key] = appendString(nil, val) }

func (p params) raw() json.RawMessage { return encodeObject(p) }
