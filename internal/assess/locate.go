package assess

import (
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// locator finds the line of a value in a decoded YAML document by its key
// path, written as the problems are: "agents[1].identity.type".
type locator struct{ root *yaml.Node }

// line returns the 1-based line of the value at path, or of the deepest
// existing ancestor when the key is absent (a missing key is reported
// where it should have been written); 0 when there is no document.
func (l locator) line(path string) int {
	n := l.root
	if n == nil {
		return 0
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	best := n.Line
	for _, seg := range splitPath(path) {
		next := child(n, seg)
		if next == nil {
			return best
		}
		n = next
		best = n.Line
	}
	return best
}

// splitPath turns "a.b[2].c" into ["a", "b", "[2]", "c"].
func splitPath(path string) []string {
	var segs []string
	for _, part := range strings.Split(path, ".") {
		for part != "" {
			i := strings.IndexByte(part, '[')
			switch {
			case i < 0:
				segs = append(segs, part)
				part = ""
			case i > 0:
				segs = append(segs, part[:i])
				part = part[i:]
			default:
				j := strings.IndexByte(part, ']')
				if j < 0 {
					segs = append(segs, part)
					part = ""
					continue
				}
				segs = append(segs, part[:j+1])
				part = part[j+1:]
			}
		}
	}
	return segs
}

func child(n *yaml.Node, seg string) *yaml.Node {
	if strings.HasPrefix(seg, "[") {
		i, err := strconv.Atoi(strings.Trim(seg, "[]"))
		if err != nil || n.Kind != yaml.SequenceNode || i < 0 || i >= len(n.Content) {
			return nil
		}
		return n.Content[i]
	}
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == seg {
			return n.Content[i+1]
		}
	}
	return nil
}
