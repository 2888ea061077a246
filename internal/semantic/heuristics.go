package semantic

import (
	"regexp"
	"strings"

	"github.com/gatehouse/gatehouse/internal/semantic/textnorm"
)

// Heuristic signals. Each pattern describes a structure (an override verb
// aimed at prior instructions, a request to disclose them, a chat-template
// role marker, a role-play frame) rather than a particular attack string.
// Scores are fixed: override and leak patterns are strong evidence on
// their own; role-play framing is common in benign prompts and only adds
// context for policy.
type heuristic struct {
	kind  string
	score float64
	re    *regexp.Regexp
}

var heuristics = []heuristic{
	{"instruction_override", 0.9, regexp.MustCompile(`(?i)\b(?:ignore|disregard|forget|override|bypass|skip|neglect|abandon|overlook|do not (?:follow|obey|listen to)|don't (?:follow|obey|listen to)|pay no attention to|stop following)\b[^.!?\n]{0,40}?\b(?:previous|prior|above|earlier|preceding|foregoing|former|initial|original|all|any|every|your|system|developer'?s?)\b[^.!?\n]{0,30}?\b(?:instructions?|prompts?|rules|directives?|guidelines|guidance|orders|commands|context|constraints|restrictions|programming|policies|content polic(?:y|ies)|safety)\b`)},
	{"instruction_override", 0.85, regexp.MustCompile(`(?i)\b(?:new|updated|real|revised|actual) (?:instructions|rules|directives?|task|objective)\s*(?::|are:|is:)`)},
	{"instruction_override", 0.8, regexp.MustCompile(`(?i)\b(?:ignoriere|vergiss|ignora|olvida|ignore[sz]?|oublie|negeer|ignorar|ignorer)\b[^.!?\n]{0,40}\b(?:anweisungen|instrucciones|instructions|consignes|istruzioni|instructies|instruções|regeln|reglas|règles|regole)\b`)},
	{"prompt_leak", 0.85, regexp.MustCompile(`(?i)\b(?:reveal|print|show|repeat|output|display|dump|leak|disclose|spell out|tell me|give me|write out|translate|summari[sz]e|encode)\b[^.!?\n]{0,40}?\b(?:the\s+)?(?:your|hidden|secret|initial|original|system|confidential|previous|above|prior|earlier)\s+(?:\w+\s+)?(?:system prompt|prompt|instructions|system message)\b`)},
	{"prompt_leak", 0.8, regexp.MustCompile(`(?i)\b(?:repeat|print|output)\b[^.!?\n]{0,20}\b(?:everything|all|the text|the words)\b[^.!?\n]{0,20}\b(?:above|before|prior)\b`)},
	{"role_marker", 0.75, regexp.MustCompile(`(?i)<\|(?:im_start|im_end|system|endoftext|start_header_id)\|>|\[/?(?:system|inst)\]|\{\{?\s*system\s*:|(?:^|\n)\s*#{2,}\s*(?:system|instruction)s?\b|(?:^|\n)\s*(?:system|admin(?:istrator)?)\s*(?:override|notice|message|prompt)?\s*:\s`)},
	{"role_play", 0.5, regexp.MustCompile(`(?i)\b(?:you are now|from now on,? you|pretend (?:to be|you are|that you)|act as (?:an?|the|if)|role-?play as|stay in character|developer mode|dan mode|do anything now|jailbreak(?:ed)?|no (?:ethical|moral) (?:guidelines|restrictions|constraints)|without (?:any )?(?:restrictions|filters|censorship))\b`)},
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
		for _, h := range heuristics {
			loc := h.re.FindStringIndex(t)
			if loc == nil {
				continue
			}
			a, b := s.span(loc[0], loc[1])
			if hidden {
				a, b = -1, -1
			}
			s.add(Finding{Detector: string(DetectHeuristics), Kind: h.kind, Score: h.score, Start: a, End: b})
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
		for _, h := range heuristics {
			if h.kind != "role_play" && h.re.MatchString(text) {
				score = max(score, h.score)
			}
		}
		if s.e.model != nil && !s.e.disable[DetectInjection] {
			score = max(score, s.e.model.Score(text).Probability)
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
		sc := s.e.model.Score(t)
		a, b := s.span(sc.SegStart, sc.SegEnd)
		if t == s.norm.Hidden && t != s.norm.Text {
			a, b = -1, -1
		}
		s.add(Finding{Detector: string(DetectInjection), Kind: "prompt_injection", Score: sc.Probability, Start: a, End: b})
	}
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

// piiScan reports personal data with the type's action.
func (s *screening) piiScan() {
	for _, m := range s.e.piiScan.Scan(s.in.Text) {
		s.add(Finding{Detector: string(DetectPII), Kind: "pii", Rule: string(m.Type), Score: 1, Start: m.Start, End: m.End, Action: s.e.piiAct[m.Type]})
	}
}
