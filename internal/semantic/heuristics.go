package semantic

import (
	"regexp"
	"strings"

	"github.com/gatehouse/gatehouse/internal/semantic/injection"
	"github.com/gatehouse/gatehouse/internal/semantic/keyword"
	"github.com/gatehouse/gatehouse/internal/semantic/textnorm"
)

// Heuristic signals. Each pattern describes a structure (an override verb
// aimed at prior instructions, a request to disclose them, a chat-template
// role marker, a role-play frame) rather than a particular attack string.
// Scores are fixed: override and leak patterns are strong evidence on
// their own; role-play framing is common in benign prompts and only adds
// context for policy.
//
// Every pattern begins with one of its triggers. One keyword pass over the
// text finds the triggers; a pattern is then tried only at its triggers,
// anchored, on a bounded window, which keeps the cost linear and small.
// Word boundaries around a trigger are checked by the caller: a pattern
// must not start with \b, which the window's start would defeat.
type heuristic struct {
	kind      string
	score     float64
	triggers  []string
	pattern   string // matched, case-insensitively, right after the trigger
	lineStart bool   // the trigger must open a line (after blanks or '#')
	dataOnly  bool   // only in data (tool results, documents), never in a principal's text
	needsAI   bool   // only in a text that names an AI reader (see mentionsAI)
	unless    string // a match containing this is not one
	re        *regexp.Regexp
	reUnless  *regexp.Regexp
}

// heuristicWindow bounds how far past its trigger a pattern may match.
const heuristicWindow = 160

var heuristicList = []*heuristic{
	{kind: "instruction_override", score: 0.9,
		triggers: []string{"ignore", "ignoring", "disregard", "disregarding", "forget", "forgetting", "forgot", "forgotten", "override", "bypass", "skip", "neglect", "abandon", "overlook", "do not follow", "do not obey", "do not listen to", "don't follow", "don't obey", "don't listen to", "pay no attention to", "stop following", "set aside"},
		pattern:  `[^.!?\n]*?\b(?:previous|previously|prior|above|earlier|preceding|foregoing|former|initial|original|all|any|every|your|system|developer'?s?)\b[^.!?\n]*?\b(?:instructions?|prompts?|rules|directives?|guidelines|guidance|orders|commands|context|constraints|restrictions|programming|policies|content polic(?:y|ies))\b`},
	{kind: "instruction_override", score: 0.9,
		triggers: []string{"ignore", "disregard", "forget", "pay no attention to"},
		pattern:  ` (?:everything |all |anything )?(?:of )?(?:the |what (?:was|is) )?(?:above|before that|before this|said before|said above|written above|prior text|previous text|preceding text|so far)\s*(?:[.,;:!]|and\b|then\b|$)`},
	{kind: "instruction_override", score: 0.9,
		triggers: []string{"vergiss", "ignoriere", "olvida", "ignora", "oublie", "ignore"},
		pattern:  ` (?:alles|todo|tout|tutto)\s*(?:davor|zuvor|bisher|oben|lo anterior|ce qui précède|quello che precede)?\s*(?:[.,;:!]|und\b|y\b|et\b|e\b|$)`},
	{kind: "instruction_override", score: 0.9,
		triggers: []string{"new", "updated", "real", "revised", "actual"},
		pattern:  ` (?:instructions|rules|directives?|task|objective)\s*(?::|are:|is:)`},
	{kind: "instruction_override", score: 0.9,
		triggers: []string{"ignoriere", "vergiss", "ignora", "olvida", "ignorez", "ignores", "oublie", "negeer", "ignorar", "ignorer", "ignorieren"},
		pattern:  `[^.!?\n]*?\b(?:anweisungen|instrucciones|instructions|consignes|istruzioni|instructies|instruções|regeln|reglas|règles|regole)\b`},
	{kind: "prompt_leak", score: 0.9,
		triggers: []string{"reveal", "print", "show", "repeat", "output", "display", "dump", "leak", "disclose", "spell out", "tell me", "give me", "write out", "translate", "summarize", "summarise", "encode"},
		pattern:  `[^.!?\n]*?\b(?:the\s+)?(?:your|hidden|secret|initial|original|system|confidential|previous|above|prior|earlier)\s+(?:\w+\s+)?(?:system prompt|prompt|instructions|system message)\b`},
	{kind: "prompt_leak", score: 0.9,
		triggers: []string{"repeat", "print", "output"},
		pattern:  `[^.!?\n]{0,20}\b(?:everything|all|the text|the words)\b[^.!?\n]{0,20}\b(?:above|before|prior)\b`},
	{kind: "role_marker", score: 0.9,
		triggers: []string{"<|im_start|>", "<|im_end|>", "<|system|>", "<|endoftext|>", "<|start_header_id|>", "[system]", "[/system]", "[inst]", "[/inst]", "{system:", "{{system"},
		pattern:  ``},
	{kind: "role_marker", score: 0.9, lineStart: true,
		triggers: []string{"system", "admin", "administrator"},
		pattern:  `\s*(?:override|notice|message|prompt|instructions?)?\s*:\s`},
	{kind: "unrestricted_ai", score: 0.9,
		triggers: []string{"ai", "ai model", "assistant", "chatbot", "language model", "llm", "version of yourself", "version of you"},
		pattern:  `(?: that| which| who)?(?: has| had| have| is| was| were)? (?:without|with no|with zero|free (?:of|from)|freed from|unbound by|not bound by|no longer bound by|unconstrained by|lacking) (?:any |all |its |your )?(?:ethics|ethical|morals?|moral|restrictions|limits|limitations|filters|guidelines|rules|censorship|safeguards|boundaries|content polic(?:y|ies))\b`},
	// Text addressed to an AI that reads it ("Note to the AI reading
	// this:", "if an AI model is summarising this page", "AI assistants
	// processing these reviews must …"): in data, the shape of an
	// indirect injection whatever it then asks; in a prompt, a user
	// talking to the assistant, so these match data only. Bare
	// "assistant" and "agent" are left out: in e-mail they are often
	// people.
	{kind: "ai_addressee", score: 0.85, dataOnly: true, needsAI: true,
		triggers: []string{"note to", "note for", "message to", "message for", "instructions to", "instructions for", "instruction to", "instruction for", "attention", "reminder to", "reminder for", "request to", "request for", "notice to", "notice for", "dear", "hey", "hello", "hi"},
		pattern:  ` (?:the |any |all |every |an? )?` + aiReader + `s?\b\s*(?:[:,]|\s-\s|\s?\x{2014})`},
	{kind: "ai_addressee", score: 0.85, dataOnly: true, needsAI: true,
		triggers: []string{"if", "when", "whenever", "in case"},
		pattern:  ` (?:you are |you're )?(?:an? |any |the |some )?` + aiReader + `s? (?:is |are )?(?:reading|processing|summari[sz]ing|handling|parsing|scanning|indexing|browsing|crawling|analy[sz]ing|viewing|reads|processes|summari[sz]es|sees)\b`},
	{kind: "ai_addressee", score: 0.85, dataOnly: true, needsAI: true,
		triggers: []string{"ai", "llm", "llms", "language model", "language models", "chatbot", "chatbots", "automated", "virtual", "digital"},
		pattern:  `(?: (?:assistant|agent|model|bot|system|helper|crawler|tool|reader|scraper)s?)? (?:that is |who is |which is |that are |who are )?(?:reading|processing|summari[sz]ing|parsing|scanning|indexing|crawling|analy[sz]ing) (?:this|these)\b`},
	// A request to produce false content ("formulate an untrue headline",
	// "make up a fake review") hijacks the model's task toward
	// disinformation; it counts toward the risk but stays below the block
	// threshold: a human may have a reason (a media-literacy class).
	{kind: "deception_request", score: 0.8,
		triggers: []string{"formulate", "write", "generate", "create", "compose", "make up", "invent", "fabricate", "produce", "draft", "come up with", "spread", "publish", "post"},
		pattern:  `(?: me| us)?(?: an?| some| the| \d+| several| many)?(?: \w+){0,2}? (?:untrue|false|fake|fabricated|made-up|bogus|deceptive|misleading)\s+(?:headlines?|news|claims?|statements?|reports?|reviews?|facts?|information|articles?|rumou?rs?|testimonials?|quotes?|citations?|evidence)\b`,
		unless:   `\b(?:about|on|of|regarding|concerning|against|how|why|what|whether|to (?:spot|detect|identify|recogni[sz]e|debunk|counter|avoid|flag))\b`},
	{kind: "role_play", score: 0.5,
		triggers: []string{"you are now", "from now on", "pretend to be", "pretend you are", "pretend that you", "act as", "roleplay as", "role-play as", "stay in character", "developer mode", "dan mode", "do anything now", "jailbreak", "no ethical", "no moral", "without restrictions", "without any restrictions", "without filters", "without censorship"},
		pattern:  ``},
}

// aiReader names an AI as the reader of a text: an AI, a language model, a
// chatbot, or an assistant, agent, model or bot that is called AI,
// automated, virtual or digital.
const aiReader = `(?:(?:ai|automated|virtual|digital)(?: \w+)?? (?:assistant|agent|model|bot|system|helper)|ai|llm|large language model|language model|chatbot|gpt|chatgpt)`

var (
	heuristicKeywords *keyword.Set
	triggerOwners     [][]int // keyword id -> heuristic indices
	triggerLens       []int
)

func init() {
	var kws []string
	for i, h := range heuristicList {
		h.re = regexp.MustCompile(`^(?i:` + h.pattern + `)`)
		if h.unless != "" {
			h.reUnless = regexp.MustCompile(`(?i:` + h.unless + `)`)
		}
		for _, t := range h.triggers {
			kws = append(kws, t)
			triggerOwners = append(triggerOwners, []int{i})
			triggerLens = append(triggerLens, len(t))
		}
	}
	heuristicKeywords = keyword.New(kws)
}

// aiWords open every aiReader; a text without one of them, as a word,
// cannot match a needsAI heuristic, whose triggers ("if", "hi", "note
// to") are common.
var (
	aiWordList = []string{"ai", "llm", "llms", "language model", "chatbot", "chatbots", "gpt", "chatgpt", "automated", "virtual", "digital"}
	aiWords    = keyword.New(aiWordList)
)

// mentionsAI reports whether t contains one of aiWords as a word.
func mentionsAI(t string) bool {
	found := false
	aiWords.Find(t, func(id, p int) {
		q := p + len(aiWordList[id])
		if !found && (p == 0 || !isWordByte(t[p-1])) && (q == len(t) || !isWordByte(t[q])) {
			found = true
		}
	})
	return found
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// heuristicMatch is a heuristic's first match in a text.
type heuristicMatch struct {
	h          *heuristic
	start, end int
	score      float64
}

// matchHeuristics returns the first match of each heuristic in t; data
// says whether t is data (a tool result, a document) rather than text from
// a principal.
func matchHeuristics(t string, data bool) []heuristicMatch {
	var out []heuristicMatch
	done := make([]bool, len(heuristicList))
	ai := 0 // whether t mentions an AI reader: 0 not yet known, 1 yes, -1 no
	heuristicKeywords.Find(t, func(id, p int) {
		for _, hi := range triggerOwners[id] {
			h := heuristicList[hi]
			if done[hi] || p > 0 && isWordByte(t[p-1]) && isWordByte(t[p]) {
				continue
			}
			if h.dataOnly && !data || h.lineStart && !opensLine(t, p) {
				continue
			}
			if h.needsAI {
				if ai == 0 {
					ai = -1
					if mentionsAI(t) {
						ai = 1
					}
				}
				if ai < 0 {
					continue
				}
			}
			q := p + triggerLens[id]
			if q < len(t) && isWordByte(t[q-1]) && isWordByte(t[q]) {
				continue // the trigger is part of a longer word
			}
			loc := h.re.FindStringIndex(t[q:min(len(t), q+heuristicWindow)])
			if loc == nil || h.reUnless != nil && h.reUnless.MatchString(t[q:q+loc[1]]) {
				continue
			}
			done[hi] = true
			score := h.score
			if quoted(t, p) {
				score /= 2 // a quoted phrase is more often cited than meant
			}
			out = append(out, heuristicMatch{h: h, start: p, end: q + loc[1], score: score})
		}
	})
	return out
}

// quoted reports whether an opening quotation mark comes right before p.
func quoted(t string, p int) bool {
	for _, q := range []string{"\"", "'", "\u201c", "\u2018", "\u00ab", "`"} {
		if strings.HasSuffix(t[:p], q) {
			return true
		}
	}
	return false
}

// opensLine reports whether only blanks and markdown heading or emphasis
// characters precede p on its line.
func opensLine(t string, p int) bool {
	for i := p - 1; i >= 0; i-- {
		switch t[i] {
		case '\n':
			return true
		case ' ', '\t', '#', '*', '>':
			continue
		default:
			return false
		}
	}
	return true
}

// heuristics runs the heuristic signals on the normalised text and on any
// text hidden in tag characters, reports invisible and bidi controls, and
// decodes encoded payloads and screens them too.
func (s *screening) heuristics() {
	n := s.norm
	for _, t := range []string{n.Text, n.Hidden} {
		if t == "" {
			continue
		}
		hidden := t == n.Hidden && t != n.Text
		for _, m := range matchHeuristics(t, s.in.Surface.Untrusted()) {
			a, b := s.span(m.start, m.end)
			if hidden {
				a, b = -1, -1
			}
			s.add(Finding{Detector: string(DetectHeuristics), Kind: m.h.kind, Score: m.score, Start: a, End: b})
		}
	}
	if n.Tags > 0 {
		s.add(Finding{Detector: string(DetectHeuristics), Kind: "tag_characters", Score: 0.95, Start: -1, End: -1})
	}
	if n.Bidi > 0 {
		s.add(Finding{Detector: string(DetectHeuristics), Kind: "bidi_control", Score: 0.6, Start: -1, End: -1})
	}
	if n.Invisible >= 3 {
		s.add(Finding{Detector: string(DetectHeuristics), Kind: "invisible_characters", Score: 0.4, Start: -1, End: -1})
	}
	if n.Confusables >= 3 {
		s.add(Finding{Detector: string(DetectHeuristics), Kind: "confusables", Score: 0.3, Start: -1, End: -1})
	}
	s.encoded()
}

// encoded decodes base64, hex and rot13 payloads and screens each decoding
// with the heuristics and the classifier; a payload that reads as an
// injection is reported with the decoded text's score.
func (s *screening) encoded() {
	for _, d := range textnorm.FindEncoded(s.norm.Text) {
		text := textnorm.Normalize(d.Text).Text
		score := 0.0
		for _, m := range matchHeuristics(text, s.in.Surface.Untrusted()) {
			if m.h.kind != "role_play" {
				score = max(score, m.score)
			}
		}
		if s.e.model != nil && !s.e.disable[DetectInjection] {
			score = max(score, s.e.model.Score(text, s.context()).Probability)
		}
		if score < 0.5 {
			continue
		}
		a, b := s.span(d.Start, d.End)
		s.add(Finding{Detector: string(DetectHeuristics), Kind: "encoded_payload", Rule: string(d.Encoding), Score: score, Start: a, End: b})
	}
}

// injection runs the trained classifier on the normalised text and on any
// hidden tag-character text.
func (s *screening) injection() {
	if s.e.model == nil {
		return
	}
	for _, t := range []string{s.norm.Text, s.norm.Hidden} {
		if strings.TrimSpace(t) == "" {
			continue
		}
		sc := s.e.model.Score(t, s.context())
		a, b := s.span(sc.SegStart, sc.SegEnd)
		if t == s.norm.Hidden && t != s.norm.Text {
			a, b = -1, -1
		}
		s.add(Finding{Detector: string(DetectInjection), Kind: "prompt_injection", Score: sc.Probability, Start: a, End: b})
	}
}

// context is the classifier context of the input's surface.
func (s *screening) context() injection.Context {
	if s.in.Surface.Untrusted() {
		return injection.Data
	}
	return injection.Prompt
}

// secretScan reports secrets with the surface's secret action.
func (s *screening) secretScan() {
	if s.e.secrets == nil {
		return
	}
	act := s.e.secretAct[s.in.Surface]
	for _, m := range s.e.secrets.Scan(s.in.Text) {
		s.add(Finding{Detector: string(DetectSecrets), Kind: "secret", Rule: m.RuleID, Score: 1, Start: m.Start, End: m.End, Action: act})
	}
}

// piiScan reports personal data with the type's action; a phone number
// reported without validation scores 0.5.
func (s *screening) piiScan() {
	for _, m := range s.e.piiScan.Scan(s.in.Text) {
		score := 1.0
		if m.Unvalidated {
			score = 0.5
		}
		s.add(Finding{Detector: string(DetectPII), Kind: "pii", Rule: string(m.Type), Score: score, Start: m.Start, End: m.End, Action: s.e.piiAct[m.Type]})
	}
}
