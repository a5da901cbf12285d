package herd

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
)

// Search over device metadata: FIELD:contains:TEXT on one text field and
// q=TEXT over all of them and the names of the device's nodes. Both are
// case-insensitive by Unicode case folding (FoldText): "Straße" finds
// "STRASSE", and neither side is otherwise normalised (an accent is a
// character). The stores keep the folded text beside the rows and match on
// it, so every store answers the same whatever its collation.

// OpContains keeps the devices whose field holds the text, compared after
// case folding: name, key, model, firmware and label.KEY (a device without
// the key does not hold it).
const OpContains = "contains"

// Search limits. A trigram index cannot find text shorter than three
// characters, so neither a contains nor a word of q may be shorter; a
// console waits for the third keystroke, as code search does.
const (
	MinSearchRunes = 3   // characters of a contains text or a word of q, after folding
	MaxSearchBytes = 200 // bytes of one, the longest name
	MaxSearchWords = 8   // words of q
)

// containsFields are the text fields a contains applies to (and label.KEY).
var containsFields = map[string]bool{"name": true, "key": true, "model": true, "firmware": true}

// ContainsApplies reports whether FIELD:contains:TEXT is accepted for field.
func ContainsApplies(field string) bool {
	if k, ok := LabelKeyOf(field); ok {
		return ValidLabelKey(k)
	}
	return containsFields[field]
}

// FoldText returns s case-folded, with every control character (a newline
// in a name, say) made a newline: the stores join a device's folded texts
// with newlines, and search text holds no control character, so no match
// spans two texts or a control character.
func FoldText(s string) string {
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || c >= 'A' && c <= 'Z' || c < 0x20 || c == 0x7f {
			plain = false
			break
		}
	}
	if plain {
		return s // most keys, models and firmware versions: nothing to fold
	}
	folded := cases.Fold().String(s)
	if strings.IndexFunc(folded, unicode.IsControl) < 0 {
		return folded
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '\n'
		}
		return r
	}, folded)
}

// FoldSearchText checks one contains text or word of q and returns it
// folded; what names the parameter in the error.
func FoldSearchText(what, s string) (string, error) {
	if !ValidText(s) {
		return "", Errorf(EINVALIDFILTER, "%s is not valid UTF-8 text", what)
	} else if len(s) > MaxSearchBytes {
		return "", Errorf(EINVALIDFILTER, "%s is longer than %d bytes", what, MaxSearchBytes)
	} else if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return "", Errorf(EINVALIDFILTER, "%s holds a control character", what)
	}
	f := FoldText(s)
	if utf8.RuneCountInString(f) < MinSearchRunes {
		return "", Errorf(EINVALIDFILTER, "%s %q is shorter than %d characters (a search needs at least %d)", what, s, MinSearchRunes, MinSearchRunes)
	}
	return f, nil
}

// ParseSearch splits q into its words (at white space), each checked and
// folded. Every word must match the device (see Device.MatchesSearch).
// Repeated words count once. An empty q, or one of white space only, is no
// search.
func ParseSearch(q string) ([]string, error) {
	if !ValidText(q) {
		return nil, Errorf(EINVALIDFILTER, "q is not valid UTF-8 text")
	}
	words := strings.Fields(q)
	var out []string
	for _, w := range words {
		f, err := FoldSearchText("q: the word", w)
		if err != nil {
			return nil, err
		}
		if !containsString(out, f) {
			out = append(out, f)
		}
	}
	if len(out) > MaxSearchWords {
		return nil, Errorf(EINVALIDFILTER, "q has %d words, at most %d allowed", len(out), MaxSearchWords)
	}
	return out, nil
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// SearchText returns the device's folded text of a contains field, and
// false when it has none (a label it does not carry).
func (d *Device) SearchText(field string) (string, bool) {
	if k, ok := LabelKeyOf(field); ok {
		v, has := d.Labels[k]
		return FoldText(v), has
	}
	switch field {
	case "name":
		return FoldText(d.Name), true
	case "key":
		return FoldText(d.Key), true
	case "model":
		return FoldText(d.Model), true
	case "firmware":
		return FoldText(d.Firmware), true
	}
	return "", false
}

// MatchesContains is the meaning of FIELD:contains:TEXT, term folded.
func (d *Device) MatchesContains(field, term string) bool {
	s, ok := d.SearchText(field)
	return ok && strings.Contains(s, term)
}

// MatchesWord is the meaning of one word of q, folded: the device's name,
// key, model, firmware or a label value holds it, or the name of a node on
// its path does (nodeNames, folded, root first: the node it is attached to
// and every ancestor up to the tenant's root).
func (d *Device) MatchesWord(word string, nodeNames []string) bool {
	for _, f := range []string{"name", "key", "model", "firmware"} {
		if d.MatchesContains(f, word) {
			return true
		}
	}
	for _, v := range d.Labels {
		if strings.Contains(FoldText(v), word) {
			return true
		}
	}
	for _, n := range nodeNames {
		if strings.Contains(n, word) {
			return true
		}
	}
	return false
}
