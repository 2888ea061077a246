package semantic

import (
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Remote is a detector that runs outside the gateway: a cloud service
// (Azure Prompt Shields, Bedrock Guardrails, Lakera Guard) or a guard model
// behind an OpenAI-compatible endpoint. Package guard has the shipped
// implementations.
//
// Check must honour ctx (the engine sets the deadline), must be safe for
// concurrent use, and must return an error, never a clean verdict, when it
// could not get a real answer (transport failure, non-2xx status, a
// response it cannot parse).
type Remote interface {
	// Name is a short stable name, such as "azure" or "lakera".
	Name() string
	// Check screens one text.
	Check(ctx context.Context, req RemoteRequest) (RemoteVerdict, error)
}

// RemoteRequest is what a Remote screens.
type RemoteRequest struct {
	Surface Surface
	Text    string
}

// RemoteVerdict is a Remote's answer.
type RemoteVerdict struct {
	// Flagged reports that the service judged the text an attack.
	Flagged bool
	// Score is the service's confidence in [0, 1]; services that only say
	// yes or no report 1 or 0.
	Score float64
	// Kinds are the service's categories, such as "prompt_attack" or
	// Llama Guard's "S14".
	Kinds []string
}

// remote wraps a Remote with its timeout, fail mode and cache.
type remote struct {
	r        Remote
	surfaces []Surface
	timeout  time.Duration
	mode     FailMode
	cache    *lru
	ttl      time.Duration
	now      func() time.Time
}

func newRemote(c RemoteConfig, now func() time.Time) (*remote, error) {
	if c.Remote == nil {
		return nil, errors.New("no adapter")
	}
	r := &remote{
		r:        c.Remote,
		surfaces: c.Surfaces,
		timeout:  cmpOr(c.Timeout, 2*time.Second),
		mode:     cmpOr(c.FailMode, FailClosed),
		ttl:      cmpOr(c.CacheTTL, 10*time.Minute),
		now:      now,
	}
	if !validFailMode(r.mode) {
		return nil, fmt.Errorf("unknown fail mode %q", r.mode)
	}
	for _, s := range c.Surfaces {
		if !s.valid() {
			return nil, fmt.Errorf("%w %q", ErrSurface, s)
		}
	}
	if size := cmpOr(c.CacheSize, 1024); size > 0 {
		r.cache = newLRU(size)
	}
	return r, nil
}

func (r *remote) applies(s Surface) bool {
	return len(r.surfaces) == 0 || slices.Contains(r.surfaces, s)
}

// screen calls the adapter (or its cache) and turns the answer, or the
// failure, into findings.
func (r *remote) screen(ctx context.Context, in Input, log *slog.Logger) []Finding {
	name := "remote:" + r.r.Name()
	key := sha256.Sum256([]byte(string(in.Surface) + "\x00" + in.Text))
	v, ok := r.cached(key)
	if !ok {
		cctx, cancel := context.WithTimeout(ctx, r.timeout)
		start := time.Now()
		var err error
		v, err = r.r.Check(cctx, RemoteRequest{Surface: in.Surface, Text: in.Text})
		cancel()
		if err != nil {
			log.Warn("semantic remote failed", "remote", r.r.Name(), "surface", string(in.Surface), "tool", in.Tool, "fail_mode", string(r.mode), "dur_ms", time.Since(start).Milliseconds(), "err", err)
			return []Finding{failure(name, r.mode)}
		}
		if r.cache != nil {
			r.cache.put(key, cacheEntry{v: v, at: r.now()})
		}
	}
	if !v.Flagged && v.Score < 0.5 {
		return []Finding{{Detector: name, Kind: "remote_clear", Score: v.Score, Start: -1, End: -1, Action: ActionReport}}
	}
	score := v.Score
	if v.Flagged && score < 0.5 {
		score = 1
	}
	var out []Finding
	kinds := v.Kinds
	if len(kinds) == 0 {
		kinds = []string{"prompt_injection"}
	}
	for _, k := range kinds {
		out = append(out, Finding{Detector: name, Kind: "prompt_injection", Rule: k, Score: score, Start: -1, End: -1})
	}
	return out
}

func (r *remote) cached(key [32]byte) (RemoteVerdict, bool) {
	if r.cache == nil {
		return RemoteVerdict{}, false
	}
	e, ok := r.cache.get(key)
	if !ok || r.now().Sub(e.at) > r.ttl {
		return RemoteVerdict{}, false
	}
	return e.v, true
}

type cacheEntry struct {
	v  RemoteVerdict
	at time.Time
}

// lru is a fixed-size least-recently-used cache, safe for concurrent use.
type lru struct {
	mu    sync.Mutex
	size  int
	order *list.List // front = most recent; values are *lruItem
	items map[[32]byte]*list.Element
}

type lruItem struct {
	key [32]byte
	val cacheEntry
}

func newLRU(size int) *lru {
	return &lru{size: size, order: list.New(), items: map[[32]byte]*list.Element{}}
}

func (c *lru) get(k [32]byte) (cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return cacheEntry{}, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*lruItem).val, true
}

func (c *lru) put(k [32]byte, v cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		el.Value.(*lruItem).val = v
		c.order.MoveToFront(el)
		return
	}
	c.items[k] = c.order.PushFront(&lruItem{key: k, val: v})
	for c.order.Len() > c.size {
		old := c.order.Back()
		c.order.Remove(old)
		delete(c.items, old.Value.(*lruItem).key)
	}
}
