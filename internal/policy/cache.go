package policy

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cedar-policy/cedar-go/types"

	"github.com/gatehouse/gatehouse/internal/verdict"
)

// maxCached bounds each entity cache; past it entities are built afresh.
const maxCached = 4096

// entityCache memoises the entities built from a request's agent and
// target, which repeat from one request to the next. An entry is used only
// when every input it was built from is equal, so a cached entity is the
// entity the request would have built.
type entityCache struct {
	mu      sync.RWMutex
	agents  map[string]*agentEntry
	targets map[targetKey]*targetEntry
	users   map[string]*userEntry
	tasks   map[string]*taskEntry
}

type userEntry struct {
	user User
	ent  types.Entity
	uid  types.Value // ent.UID, boxed once
}

type taskEntry struct {
	task Task
	ent  types.Entity
	uid  types.Value
}

func (c *entityCache) user(u *User) (types.Entity, types.Value) {
	c.mu.RLock()
	e := c.users[u.ID]
	c.mu.RUnlock()
	if e != nil && slices.Equal(e.user.Groups, u.Groups) && maps.EqualFunc(e.user.Tags, u.Tags, slices.Equal) {
		return e.ent, e.uid
	}
	var tags types.RecordMap
	if len(u.Tags) > 0 {
		tags = make(types.RecordMap, len(u.Tags))
		for k, v := range u.Tags {
			tags[types.String(k)] = stringSet(v)
		}
	}
	ent := types.Entity{
		UID:        types.NewEntityUID(TypeUser, types.String(u.ID)),
		Parents:    types.NewEntityUIDSet(groupUIDs(u.Groups)...),
		Attributes: types.NewRecord(types.RecordMap{"groups": stringSet(u.Groups)}),
		Tags:       types.NewRecord(tags),
	}
	var uid types.Value = ent.UID
	c.put(func() {
		if c.users == nil {
			c.users = map[string]*userEntry{}
		}
		if len(c.users) < maxCached {
			cp := User{ID: u.ID, Groups: slices.Clone(u.Groups), Tags: maps.Clone(u.Tags)}
			c.users[u.ID] = &userEntry{user: cp, ent: ent, uid: uid}
		}
	})
	return ent, uid
}

func (c *entityCache) task(t *Task) (types.Entity, types.Value) {
	c.mu.RLock()
	e := c.tasks[t.ID]
	c.mu.RUnlock()
	if e != nil && e.task.Purpose == t.Purpose && e.task.NotBefore.Equal(t.NotBefore) && e.task.NotAfter.Equal(t.NotAfter) {
		return e.ent, e.uid
	}
	attrs := types.RecordMap{"purpose": types.String(t.Purpose)}
	if !t.NotBefore.IsZero() {
		attrs["not_before"] = types.NewDatetime(t.NotBefore)
	}
	if !t.NotAfter.IsZero() {
		attrs["not_after"] = types.NewDatetime(t.NotAfter)
	}
	ent := types.Entity{UID: types.NewEntityUID(TypeTask, types.String(t.ID)), Attributes: types.NewRecord(attrs)}
	var uid types.Value = ent.UID
	c.put(func() {
		if c.tasks == nil {
			c.tasks = map[string]*taskEntry{}
		}
		if len(c.tasks) < maxCached {
			c.tasks[t.ID] = &taskEntry{task: *t, ent: ent, uid: uid}
		}
	})
	return ent, uid
}

type agentEntry struct {
	owner, hosting string
	groups         []string
	ent            types.Entity
	parents        []types.EntityUID
}

type targetKey struct {
	typ          types.EntityType
	server, name string
}

type targetEntry struct {
	labels  []verdict.Label // the request's labels
	ent     types.Entity
	server  types.Entity
	parents []types.EntityUID
}

func (c *entityCache) agent(a *Agent) (types.Entity, []types.EntityUID) {
	c.mu.RLock()
	e := c.agents[a.ID]
	c.mu.RUnlock()
	if e != nil && e.owner == a.Owner && e.hosting == a.Hosting && slices.Equal(e.groups, a.Groups) {
		return e.ent, e.parents
	}
	parents := groupUIDs(a.Groups)
	ent := types.Entity{
		UID:     types.NewEntityUID(TypeAgent, types.String(a.ID)),
		Parents: types.NewEntityUIDSet(parents...),
		Attributes: types.NewRecord(types.RecordMap{
			"owner":   types.String(a.Owner),
			"hosting": types.String(a.Hosting),
			"groups":  stringSet(a.Groups),
		}),
	}
	c.put(func() {
		if c.agents == nil {
			c.agents = map[string]*agentEntry{}
		}
		if len(c.agents) < maxCached {
			c.agents[a.ID] = &agentEntry{owner: a.Owner, hosting: a.Hosting, groups: slices.Clone(a.Groups), ent: ent, parents: parents}
		}
	})
	return ent, parents
}

// target returns the entity for a tool, resource or prompt of a server,
// and the server's entity (zero when server is "").
func (c *entityCache) target(typ types.EntityType, server, name, nameAttr string, reqLabels, extra []verdict.Label) (ent, srv types.Entity, parents []types.EntityUID) {
	k := targetKey{typ, server, name}
	c.mu.RLock()
	e := c.targets[k]
	c.mu.RUnlock()
	if e != nil && slices.Equal(e.labels, reqLabels) {
		return e.ent, e.server, e.parents
	}
	var parentSet types.EntityUIDSet
	if server != "" {
		srv = serverEntity(server)
		parents = []types.EntityUID{srv.UID}
		parentSet = types.NewEntityUIDSet(srv.UID)
	}
	labels := reqLabels
	if len(extra) > 0 {
		labels = append(slices.Clone(labels), extra...)
	}
	ent = types.Entity{
		UID:     types.NewEntityUID(typ, types.String(ToolID(server, name))),
		Parents: parentSet,
		Attributes: types.NewRecord(types.RecordMap{
			types.String(nameAttr): types.String(name),
			"server":               types.String(server),
			"labels":               stringSet(labels),
		}),
	}
	c.put(func() {
		if c.targets == nil {
			c.targets = map[targetKey]*targetEntry{}
		}
		if len(c.targets) < maxCached {
			c.targets[k] = &targetEntry{labels: slices.Clone(reqLabels), ent: ent, server: srv, parents: parents}
		}
	})
	return ent, srv, parents
}

func (c *entityCache) put(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f()
}

func serverEntity(server string) types.Entity {
	return types.Entity{
		UID:        types.NewEntityUID(TypeServer, types.String(server)),
		Attributes: types.NewRecord(types.RecordMap{"name": types.String(server)}),
	}
}

// labelVocabulary is the labels whose sets are interned: the session and
// tool labels of package verdict.
var labelVocabulary = func() []verdict.Label {
	out := []verdict.Label{verdict.SessionPrivateData, verdict.SessionUntrustedContent}
	for _, l := range verdict.ToolLabels {
		if !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return out
}()

// labelSets interns the Cedar set of each combination of vocabulary labels.
var labelSets [1 << 10]atomic.Pointer[types.Value]

// labelSet returns the Cedar set of labels, interned (and boxed once) when
// every label is in the vocabulary.
func labelSet(labels []verdict.Label) types.Value {
	if len(labels) == 0 {
		return emptySetV
	}
	var mask uint
	for _, l := range labels {
		i := slices.Index(labelVocabulary, l)
		if i < 0 || i >= 10 {
			return stringSet(labels)
		}
		mask |= 1 << i
	}
	if p := labelSets[mask].Load(); p != nil {
		return *p
	}
	var set types.Value = stringSet(labels)
	labelSets[mask].Store(&set)
	return set
}
