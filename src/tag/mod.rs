//! The tagger: the taxonomy compiled into one matcher, and the pure function that tags an event.
//!
//! [`Tagger::compile`] turns a [`TaxonomyConfig`] into three matchers built once at start-up: one
//! Aho-Corasick automaton over every keyword and phrase of every rule, one `RegexSet` over every
//! regex rule (with the individual regexes beside it to find spans), and per structured field a
//! sorted list of the values its field rules want. [`Tagger::tag`] scans each text field once per
//! matcher, whatever the number of rules, and turns the hits into ranked [`TagMatch`]es with
//! bounded [`Evidence`].
//!
//! The cost of a call is mostly the two scans, a few nanoseconds per byte of text each, and the
//! strings of the output. The regex set is the dearer scan and grows with the number and shape of
//! the regexes, so the taxonomy should prefer keywords and phrases where they suffice.
//!
//! Tagging is deterministic: rules are numbered in taxonomy order (tag by tag, rule by rule), hits
//! are sorted by rule, field and position, and ties in score keep taxonomy order, so no hash order
//! ever reaches the output.

use std::collections::{HashMap, HashSet};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex::{Regex, RegexSet, RegexSetBuilder};
use serde::Serialize;

use crate::config::taxonomy::{TaxonomyConfig, STRUCTURED_FIELDS, TEXT_FIELDS, UNCATEGORIZED};
use crate::domain::EventData;

/// Evidence entries kept per rule: enough to explain a match, bounded however often the rule
/// matched.
pub const MAX_EVIDENCE_PER_RULE: usize = 3;

/// Longest evidence text kept, in bytes; a long regex match is cut on a char boundary below it.
pub const MAX_EVIDENCE_TEXT_BYTES: usize = 200;

/// Why a tag matched: one rule's match in one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// `{tag_id}/{rule_id}`.
    pub rule: String,
    /// The text field (subject, body, comment, resolution) or the structured field that matched.
    pub field: String,
    /// Byte span of the match in that field's value.
    pub start: usize,
    pub end: usize,
    /// The matched text, at most [`MAX_EVIDENCE_TEXT_BYTES`] bytes.
    pub text: String,
}

/// One tag an event matched, with its score (the sum of its matched rules' weights).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagMatch {
    pub tag: String,
    pub score: u32,
    pub evidence: Vec<Evidence>,
}

/// The tags of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tagging {
    /// The best-ranked tag id, or [`UNCATEGORIZED`] when nothing matched.
    pub primary: String,
    /// Ranked by score descending, then taxonomy order; empty when uncategorized.
    pub matches: Vec<TagMatch>,
}

/// The compiled taxonomy. Build it once with [`Tagger::compile`]; [`Tagger::tag`] is then a pure
/// function of the event data.
#[derive(Debug)]
pub struct Tagger {
    /// Tag ids in taxonomy order; a rule refers to its tag by index into this list.
    tag_ids: Vec<String>,
    known_tags: HashSet<String>,
    /// Every rule of every tag, in taxonomy order, so that sorting hits by rule number groups them
    /// by tag in taxonomy order.
    rules: Vec<CompiledRule>,
    /// `None` when the taxonomy has no keyword or phrase, which saves a scan per field.
    automaton: Option<AhoCorasick>,
    /// The rules of automaton pattern `p` are
    /// `pattern_rules[pattern_rule_starts[p]..pattern_rule_starts[p + 1]]`. One flat list rather
    /// than a `Vec` per pattern keeps the lookup to two indexings.
    pattern_rule_starts: Vec<u32>,
    pattern_rules: Vec<u32>,
    /// `regex_set`'s pattern `i` is `regexes[i]`, which belongs to rule `regex_rules[i]`.
    regex_set: RegexSet,
    regexes: Vec<Regex>,
    regex_rules: Vec<u32>,
    /// The field rules, grouped by the structured field they test, in `STRUCTURED_FIELDS` order.
    field_indexes: Vec<FieldIndex>,
}

#[derive(Debug)]
struct CompiledRule {
    tag: usize,
    /// `{tag_id}/{rule_id}`, built once so that evidence only clones it.
    name: String,
    weight: u32,
    /// Bit set of the text fields a text rule looks at (see [`text_field_bit`]).
    text_fields: u8,
    /// The structured field a field rule tests; `None` for a text rule.
    structured_field: Option<&'static str>,
}

/// The field rules of one structured field. A taxonomy typically has a field rule per tag on the
/// same field (`product_area`), so looking the event's value up once in a sorted list is much
/// cheaper than testing every rule.
#[derive(Debug)]
struct FieldIndex {
    field: &'static str,
    /// `(wanted value, ASCII-lowercased; rule number)`, sorted and without duplicates.
    entries: Vec<(String, u32)>,
}

impl FieldIndex {
    /// The rules whose wanted values equal `value`, ASCII case-insensitively.
    fn rules_matching<'a>(&'a self, value: &'a str) -> impl Iterator<Item = u32> + 'a {
        let first = self.entries.partition_point(|(wanted, _)| {
            compare_to_ascii_lowercase(wanted, value) == std::cmp::Ordering::Less
        });
        self.entries[first..]
            .iter()
            .take_while(move |(wanted, _)| wanted.eq_ignore_ascii_case(value))
            .map(|(_, rule_index)| *rule_index)
    }
}

/// Compares an already lowercased string with another string as if that were lowercased too,
/// without allocating its lowercased copy.
fn compare_to_ascii_lowercase(lowercase: &str, other: &str) -> std::cmp::Ordering {
    lowercase
        .bytes()
        .cmp(other.bytes().map(|byte| byte.to_ascii_lowercase()))
}

/// One match of one rule, before ranking. Spans index the field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Hit {
    rule: u32,
    /// Position in `EventData::text_fields()`, or [`STRUCTURED_FIELD`] for a field rule.
    field: u32,
    start: usize,
    end: usize,
}

/// Room reserved for the hits of an event with text, enough for a typical ticket.
const TYPICAL_HITS_PER_TEXT_EVENT: usize = 32;

/// The `Hit::field` of a field rule's hit; it sorts after every text field, and a field rule has at
/// most one hit anyway.
const STRUCTURED_FIELD: u32 = u32::MAX;

/// The bit of a text field that `EventData::text_fields()` names but `TEXT_FIELDS` does not; only
/// rules that look at every field see it. It keeps a new domain field from being silently skipped.
const OTHER_TEXT_FIELD_BIT: u8 = 1 << 7;

/// The mask of a text rule with no `fields`: every field, including ones added later.
const ALL_TEXT_FIELDS: u8 = u8::MAX;

const _: () = assert!(
    TEXT_FIELDS.len() < 8,
    "text field bits must fit below OTHER_TEXT_FIELD_BIT"
);

fn text_field_bit(name: &str) -> u8 {
    match TEXT_FIELDS.iter().position(|known| *known == name) {
        Some(position) => 1 << position,
        None => OTHER_TEXT_FIELD_BIT,
    }
}

impl Tagger {
    /// Compiles the taxonomy once: one Aho-Corasick automaton over all keywords and phrases, one
    /// `RegexSet` over all regex rules. Returns every problem at once: those of
    /// [`TaxonomyConfig::validate`], then those of building the matchers.
    pub fn compile(taxonomy: &TaxonomyConfig) -> Result<Tagger, Vec<String>> {
        let mut problems = taxonomy.validate();

        let mut rules = Vec::new();
        // Patterns are keyed by their ASCII-lowercased text, the same folding the automaton
        // applies, so that `Refund` and `refund` become one pattern whose hits go to every rule
        // using either.
        let mut pattern_ids: HashMap<String, usize> = HashMap::new();
        let mut patterns: Vec<String> = Vec::new();
        let mut rules_by_pattern: Vec<Vec<u32>> = Vec::new();
        let mut regex_sources = Vec::new();
        let mut regexes = Vec::new();
        let mut regex_rules = Vec::new();
        let mut field_entries: Vec<Vec<(String, u32)>> = vec![Vec::new(); STRUCTURED_FIELDS.len()];

        for (tag_index, tag) in taxonomy.tags.iter().enumerate() {
            for rule in &tag.rules {
                let Ok(rule_index) = u32::try_from(rules.len()) else {
                    problems.push("taxonomy: has more than 4294967295 rules".to_owned());
                    return Err(problems);
                };
                let text_fields = if rule.fields.is_empty() {
                    ALL_TEXT_FIELDS
                } else {
                    // Unknown names were reported by validate(); they select nothing here.
                    rule.fields
                        .iter()
                        .filter_map(|field| TEXT_FIELDS.iter().position(|known| known == field))
                        .fold(0, |mask, position| mask | (1 << position))
                };

                for pattern in rule.keywords.iter().chain(&rule.phrases) {
                    let pattern = pattern.trim().to_ascii_lowercase();
                    // An empty pattern would match everywhere; validate() reported it.
                    if pattern.is_empty() {
                        continue;
                    }
                    let pattern_id = *pattern_ids.entry(pattern).or_insert_with_key(|pattern| {
                        patterns.push(pattern.clone());
                        rules_by_pattern.push(Vec::new());
                        patterns.len() - 1
                    });
                    let users = &mut rules_by_pattern[pattern_id];
                    // A rule listing one word twice (in any case) still gets one hit per match.
                    if users.last() != Some(&rule_index) {
                        users.push(rule_index);
                    }
                }

                if let Some(source) = &rule.regex {
                    // A regex that does not compile alone was reported by validate(); leaving it
                    // out of the set lets the set still report its own problems (such as its size).
                    if let Ok(regex) = Regex::new(source) {
                        regex_sources.push(source.as_str());
                        regexes.push(regex);
                        regex_rules.push(rule_index);
                    }
                }

                // An unknown field was reported by validate(); it selects nothing here.
                let structured_field = rule.field.as_deref().and_then(|field| {
                    let position = STRUCTURED_FIELDS.iter().position(|known| *known == field)?;
                    for wanted in &rule.equals {
                        field_entries[position].push((wanted.to_ascii_lowercase(), rule_index));
                    }
                    Some(STRUCTURED_FIELDS[position])
                });

                rules.push(CompiledRule {
                    tag: tag_index,
                    name: format!("{}/{}", tag.id, rule.id),
                    weight: rule.weight,
                    text_fields,
                    structured_field,
                });
            }
        }

        let automaton = if patterns.is_empty() {
            None
        } else {
            // ASCII case folding is what "case-insensitive" means here: `Invoice` matches
            // `invoice`, but non-ASCII letters match only as written (`É` does not match `é`).
            // Unicode folding would need a lowercased copy of every field per call, which the
            // throughput budget does not allow; taxonomies in other scripts list the case variants
            // they need.
            //
            // Standard match semantics allow overlapping search, which reports every pattern at
            // every position: a phrase of one tag and a keyword inside it of another both match.
            // A DFA is the fastest automaton to search: over 300 patterns, about 2 ns per byte in
            // an overlapping search against 3.4 for the contiguous NFA. Its memory (300 KB for 300
            // patterns, 3 MB for 700) is paid once per process.
            let built = AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .kind(Some(AhoCorasickKind::DFA))
                .build(&patterns);
            match built {
                Ok(automaton) => Some(automaton),
                Err(error) => {
                    problems.push(format!(
                        "taxonomy: the keywords and phrases do not compile into one automaton: {error}"
                    ));
                    None
                }
            }
        };

        // The default lazy-DFA cache (2 MB) is too small for a set of ~70 case-insensitive regexes:
        // once it thrashes, the set falls back to a matcher ten times slower. 32 MB, paid once per
        // process, keeps every search on the DFA.
        let regex_set = match RegexSetBuilder::new(&regex_sources)
            .dfa_size_limit(32 << 20)
            .build()
        {
            Ok(regex_set) => regex_set,
            Err(error) => {
                problems.push(format!(
                    "taxonomy: the regex rules do not compile into one RegexSet: {error}"
                ));
                RegexSet::empty()
            }
        };

        if !problems.is_empty() {
            return Err(problems);
        }

        let mut pattern_rule_starts = Vec::with_capacity(rules_by_pattern.len() + 1);
        let mut pattern_rules = Vec::new();
        for users in &rules_by_pattern {
            pattern_rule_starts.push(pattern_rules.len() as u32);
            pattern_rules.extend_from_slice(users);
        }
        pattern_rule_starts.push(pattern_rules.len() as u32);

        let field_indexes = STRUCTURED_FIELDS
            .iter()
            .zip(field_entries)
            .filter(|(_, entries)| !entries.is_empty())
            .map(|(field, mut entries)| {
                entries.sort();
                entries.dedup();
                FieldIndex { field, entries }
            })
            .collect();

        let tag_ids: Vec<String> = taxonomy.tags.iter().map(|tag| tag.id.clone()).collect();
        Ok(Tagger {
            known_tags: tag_ids.iter().cloned().collect(),
            tag_ids,
            rules,
            automaton,
            pattern_rule_starts,
            pattern_rules,
            regex_set,
            regexes,
            regex_rules,
            field_indexes,
        })
    }

    /// Tags one event: every tag whose rules match, ranked, with evidence.
    pub fn tag(&self, data: &EventData) -> Tagging {
        let text_fields = data.text_fields();
        // Hits are collected flat and sorted once. Apart from the field list above, the only
        // allocations of a call are this vector and the strings of the output. A ticket typically
        // has a few dozen hits, so reserving room for them up front saves the vector's regrowth;
        // an event without text has a hit per field rule at most and starts empty.
        let mut hits: Vec<Hit> = if text_fields.is_empty() {
            Vec::new()
        } else {
            Vec::with_capacity(TYPICAL_HITS_PER_TEXT_EVENT)
        };

        for (position, (name, value)) in text_fields.iter().enumerate() {
            let field = position as u32;
            let field_bit = text_field_bit(name);
            if let Some(automaton) = &self.automaton {
                self.find_patterns(automaton, value, field, field_bit, &mut hits);
            }
            if !self.regexes.is_empty() {
                self.find_regexes(value, field, field_bit, &mut hits);
            }
        }

        for index in &self.field_indexes {
            let Some(value) = data.structured_field(index.field) else {
                continue;
            };
            for rule_index in index.rules_matching(value) {
                hits.push(Hit {
                    rule: rule_index,
                    field: STRUCTURED_FIELD,
                    start: 0,
                    end: value.len(),
                });
            }
        }

        if hits.is_empty() {
            return Tagging {
                primary: UNCATEGORIZED.to_owned(),
                matches: Vec::new(),
            };
        }

        // Sorting by rule groups hits by tag in taxonomy order (rules are numbered tag by tag), and
        // within a rule orders them by field order, then position, which picks the evidence kept.
        hits.sort_unstable();
        hits.dedup();

        let mut matches: Vec<TagMatch> = Vec::new();
        let mut current_tag = usize::MAX;
        let mut current_rule = u32::MAX;
        let mut evidence_of_rule = 0;
        for hit in &hits {
            let rule = &self.rules[hit.rule as usize];
            if rule.tag != current_tag {
                current_tag = rule.tag;
                matches.push(TagMatch {
                    tag: self.tag_ids[rule.tag].clone(),
                    score: 0,
                    evidence: Vec::new(),
                });
            }
            let Some(tag_match) = matches.last_mut() else {
                continue;
            };
            if hit.rule != current_rule {
                // A rule counts once toward its tag, however many times it matched.
                current_rule = hit.rule;
                evidence_of_rule = 0;
                tag_match.score = tag_match.score.saturating_add(rule.weight);
            }
            if evidence_of_rule < MAX_EVIDENCE_PER_RULE {
                evidence_of_rule += 1;
                let (field, value) = match rule.structured_field {
                    Some(field) if hit.field == STRUCTURED_FIELD => {
                        (field, data.structured_field(field).unwrap_or(""))
                    }
                    _ => text_fields[hit.field as usize],
                };
                tag_match.evidence.push(Evidence {
                    rule: rule.name.clone(),
                    field: field.to_owned(),
                    start: hit.start,
                    end: hit.end,
                    text: truncate_on_char_boundary(
                        &value[hit.start..hit.end],
                        MAX_EVIDENCE_TEXT_BYTES,
                    )
                    .to_owned(),
                });
            }
        }

        // A stable sort keeps taxonomy order among equal scores.
        matches.sort_by_key(|tag_match| std::cmp::Reverse(tag_match.score));
        Tagging {
            primary: matches[0].tag.clone(),
            matches,
        }
    }

    /// How many tags the taxonomy has.
    pub fn tag_count(&self) -> usize {
        self.tag_ids.len()
    }

    /// Whether `tag_id` is a tag of the taxonomy (`uncategorized` is not).
    pub fn contains(&self, tag_id: &str) -> bool {
        self.known_tags.contains(tag_id)
    }

    fn find_patterns(
        &self,
        automaton: &AhoCorasick,
        value: &str,
        field: u32,
        field_bit: u8,
        hits: &mut Vec<Hit>,
    ) {
        for found in automaton.find_overlapping_iter(value) {
            let (start, end) = (found.start(), found.end());
            if !is_on_word_boundaries(value, start, end) {
                continue;
            }
            let pattern = found.pattern().as_usize();
            let users = self.pattern_rule_starts[pattern] as usize
                ..self.pattern_rule_starts[pattern + 1] as usize;
            for &rule_index in &self.pattern_rules[users] {
                if self.rules[rule_index as usize].text_fields & field_bit != 0 {
                    hits.push(Hit {
                        rule: rule_index,
                        field,
                        start,
                        end,
                    });
                }
            }
        }
    }

    fn find_regexes(&self, value: &str, field: u32, field_bit: u8, hits: &mut Vec<Hit>) {
        // The set scans the field once for all regexes; only those that matched run again, alone,
        // to find spans. Word boundaries are not checked: a regex states its own `\b`.
        for index in self.regex_set.matches(value).iter() {
            let rule_index = self.regex_rules[index];
            if self.rules[rule_index as usize].text_fields & field_bit == 0 {
                continue;
            }
            // Matches come in position order, so the first few of this field are the ones kept.
            for found in self.regexes[index]
                .find_iter(value)
                .take(MAX_EVIDENCE_PER_RULE)
            {
                hits.push(Hit {
                    rule: rule_index,
                    field,
                    start: found.start(),
                    end: found.end(),
                });
            }
        }
    }
}

/// Whether a match sits on word boundaries: the chars on either side, if any, are not word chars.
/// Matches start and end on char boundaries, because patterns are whole UTF-8 strings and ASCII
/// case folding never touches a multi-byte sequence.
fn is_on_word_boundaries(text: &str, start: usize, end: usize) -> bool {
    let before = match text.as_bytes()[..start].last() {
        None => false,
        Some(byte) if byte.is_ascii() => is_word_byte(*byte),
        Some(_) => text[..start].chars().next_back().is_some_and(is_word_char),
    };
    if before {
        return false;
    }
    match text.as_bytes().get(end) {
        None => true,
        Some(byte) if byte.is_ascii() => !is_word_byte(*byte),
        Some(_) => !text[end..].chars().next().is_some_and(is_word_char),
    }
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// Word chars in any script: `é` in `café` is one, so the keyword `caf` does not match there.
fn is_word_char(character: char) -> bool {
    character.is_alphanumeric() || character == '_'
}

fn truncate_on_char_boundary(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        AccountId, SurveyKind, SurveyResponded, TicketOpened, TicketPriority, TicketSolved,
        UsageMetric,
    };

    fn tagger(taxonomy: &str) -> Tagger {
        let taxonomy: TaxonomyConfig = toml::from_str(taxonomy).expect("the test taxonomy parses");
        Tagger::compile(&taxonomy).expect("the test taxonomy compiles")
    }

    fn compile_problems(taxonomy: &str) -> Vec<String> {
        let taxonomy: TaxonomyConfig = toml::from_str(taxonomy).expect("the test taxonomy parses");
        Tagger::compile(&taxonomy).expect_err("the test taxonomy must not compile")
    }

    fn account() -> AccountId {
        AccountId::parse("acme").unwrap()
    }

    fn ticket(subject: &str, body: &str) -> EventData {
        EventData::TicketOpened(TicketOpened {
            ticket_id: "T-1".to_owned(),
            account_id: account(),
            subject: Some(subject.to_owned()),
            body: Some(body.to_owned()),
            priority: None,
            channel: None,
            requester: None,
            product_area: None,
            journey_stage: None,
        })
    }

    fn survey(comment: Option<&str>) -> EventData {
        EventData::SurveyResponded(SurveyResponded {
            response_id: "R-1".to_owned(),
            account_id: account(),
            kind: SurveyKind::Nps,
            score: 3,
            comment: comment.map(str::to_owned),
            journey_stage: None,
            touchpoint: None,
            user_id: None,
        })
    }

    fn tags_of(tagging: &Tagging) -> Vec<&str> {
        tagging
            .matches
            .iter()
            .map(|tag_match| tag_match.tag.as_str())
            .collect()
    }

    const BILLING: &str = r#"
        [[tag]]
        id = "billing"
        label = "Billing"

        [[tag]]
        id = "billing.refund"
        label = "Refund"
        [[tag.rule]]
        id = "words"
        keywords = ["refund", "chargeback"]
    "#;

    #[test]
    fn keywords_match_case_insensitively_on_word_boundaries_only() {
        let tagger = tagger(BILLING);
        for text in [
            "I want a REFUND.",
            "Refund",
            "(refund)",
            "refund_request? no: refund-request",
        ] {
            let tagging = tagger.tag(&ticket(text, ""));
            assert_eq!(tagging.primary, "billing.refund", "{text:?} should match");
        }
        for text in [
            "refunded twice",
            "nonrefundable",
            "refund_request",
            "refund9",
            "prerefund",
        ] {
            let tagging = tagger.tag(&ticket(text, ""));
            assert_eq!(tagging.primary, UNCATEGORIZED, "{text:?} should not match");
        }
    }

    #[test]
    fn non_ascii_neighbours_are_word_characters() {
        let tagger = tagger(
            r#"
            [[tag]]
            id = "food"
            label = "Food"
            [[tag.rule]]
            id = "words"
            keywords = ["caf", "cran", "menu"]
        "#,
        );
        for text in ["au café", "un écran", "menuÜ", "日本menu"] {
            assert_eq!(
                tagger.tag(&ticket(text, "")).primary,
                UNCATEGORIZED,
                "{text:?}"
            );
        }
        // Punctuation and symbols outside ASCII are not word characters.
        for text in ["—menu—", "«menu»", "menu…", "🍕menu🍕"] {
            assert_eq!(tagger.tag(&ticket(text, "")).primary, "food", "{text:?}");
        }
    }

    #[test]
    fn a_phrase_and_a_keyword_of_two_tags_both_match() {
        let tagger = tagger(
            r#"
            [[tag]]
            id = "billing"
            label = "Billing"
            [[tag.rule]]
            id = "invoice"
            keywords = ["invoice"]

            [[tag]]
            id = "billing.invoice-error"
            label = "Invoice error"
            [[tag.rule]]
            id = "wrong-amount"
            phrases = ["wrong invoice amount"]
            weight = 3
        "#,
        );
        let tagging = tagger.tag(&ticket("Wrong Invoice Amount", ""));
        assert_eq!(tagging.primary, "billing.invoice-error");
        assert_eq!(tags_of(&tagging), ["billing.invoice-error", "billing"]);
        assert_eq!(tagging.matches[0].evidence[0].text, "Wrong Invoice Amount");
        assert_eq!(
            (
                tagging.matches[1].evidence[0].start,
                tagging.matches[1].evidence[0].end
            ),
            (6, 13)
        );
    }

    #[test]
    fn a_pattern_shared_by_several_rules_matches_each_of_them() {
        let tagger = tagger(
            r#"
            [[tag]]
            id = "billing"
            label = "Billing"
            [[tag.rule]]
            id = "money"
            keywords = ["refund", "Refund"]
            [[tag.rule]]
            id = "money-again"
            keywords = ["REFUND"]

            [[tag]]
            id = "churn"
            label = "Churn"
            [[tag.rule]]
            id = "leaving"
            keywords = ["refund"]
        "#,
        );
        let tagging = tagger.tag(&ticket("refund", ""));
        assert_eq!(tags_of(&tagging), ["billing", "churn"]);
        assert_eq!(tagging.matches[0].score, 2);
        let rules: Vec<&str> = tagging.matches[0]
            .evidence
            .iter()
            .map(|evidence| evidence.rule.as_str())
            .collect();
        assert_eq!(rules, ["billing/money", "billing/money-again"]);
        assert_eq!(tagging.matches[1].evidence[0].rule, "churn/leaving");
    }

    #[test]
    fn a_rule_counts_once_and_keeps_its_first_three_evidence_entries_in_field_order() {
        let tagger = tagger(
            r#"
            [[tag]]
            id = "billing"
            label = "Billing"
            [[tag.rule]]
            id = "refund"
            keywords = ["refund"]
            weight = 2
        "#,
        );
        let tagging = tagger.tag(&ticket("refund", "refund refund refund refund"));
        assert_eq!(tagging.matches.len(), 1);
        assert_eq!(tagging.matches[0].score, 2);
        let places: Vec<(&str, usize)> = tagging.matches[0]
            .evidence
            .iter()
            .map(|evidence| (evidence.field.as_str(), evidence.start))
            .collect();
        assert_eq!(places, [("subject", 0), ("body", 0), ("body", 7)]);
    }

    #[test]
    fn evidence_within_a_field_is_ordered_by_start_even_when_matches_end_in_another_order() {
        let tagger = tagger(
            r#"
            [[tag]]
            id = "billing"
            label = "Billing"
            [[tag.rule]]
            id = "late"
            phrases = ["late invoice payment", "invoice"]
        "#,
        );
        // The automaton reports `invoice` (ending at 12) before the phrase (ending at 20).
        let tagging = tagger.tag(&ticket("late invoice payment", ""));
        let spans: Vec<(usize, usize)> = tagging.matches[0]
            .evidence
            .iter()
            .map(|evidence| (evidence.start, evidence.end))
            .collect();
        assert_eq!(spans, [(0, 20), (5, 12)]);
    }

    #[test]
    fn text_rules_look_only_at_their_fields() {
        let tagger = tagger(
            r#"
            [[tag]]
            id = "outage"
            label = "Outage"
            [[tag.rule]]
            id = "down"
            keywords = ["down"]
            fields = ["subject"]
            [[tag.rule]]
            id = "status"
            regex = '\b5\d\d\b'
            fields = ["subject", "resolution"]
        "#,
        );
        assert_eq!(
            tagger
                .tag(&ticket("", "the site is down with a 503"))
                .primary,
            UNCATEGORIZED
        );
        let tagging = tagger.tag(&ticket("down", "503"));
        assert_eq!(tagging.matches[0].score, 1);
        let solved = EventData::TicketSolved(TicketSolved {
            ticket_id: "T-1".to_owned(),
            account_id: account(),
            resolution: Some("fixed the 502 and it was not down".to_owned()),
        });
        let tagging = tagger.tag(&solved);
        assert_eq!(tagging.matches[0].evidence.len(), 1);
        assert_eq!(tagging.matches[0].evidence[0].field, "resolution");
        assert_eq!(tagging.matches[0].evidence[0].text, "502");
    }

    #[test]
    fn regex_evidence_carries_the_byte_span() {
        let tagger = tagger(
            r#"
            [[tag]]
            id = "billing"
            label = "Billing"
            [[tag.rule]]
            id = "invoice-number"
            regex = '(?i)\binv-\d+\b'
        "#,
        );
        let body = "Ça coûte: INV-20931 est faux";
        let tagging = tagger.tag(&ticket("Facture", body));
        let evidence = &tagging.matches[0].evidence[0];
        assert_eq!(evidence.rule, "billing/invoice-number");
        assert_eq!(evidence.field, "body");
        assert_eq!(&body[evidence.start..evidence.end], "INV-20931");
        assert_eq!((evidence.start, evidence.end), (12, 21));
        assert_eq!(evidence.text, "INV-20931");
    }

    #[test]
    fn long_evidence_text_is_cut_on_a_char_boundary() {
        let tagger = tagger(
            r#"
            [[tag]]
            id = "money"
            label = "Money"
            [[tag.rule]]
            id = "euros"
            regex = '€+'
        "#,
        );
        let body = "€".repeat(100);
        let evidence = &tagger.tag(&ticket("", &body)).matches[0].evidence[0];
        assert_eq!((evidence.start, evidence.end), (0, 300));
        assert_eq!(evidence.text, "€".repeat(66));
    }

    #[test]
    fn field_rules_match_structured_fields() {
        let tagger = tagger(
            r#"
            [[tag]]
            id = "adoption"
            label = "Adoption"
            [[tag.rule]]
            id = "errors"
            field = "metric"
            equals = ["api_errors", "webhook_errors"]

            [[tag]]
            id = "support"
            label = "Support"
            [[tag.rule]]
            id = "urgent"
            field = "priority"
            equals = ["urgent"]
            [[tag.rule]]
            id = "ticket"
            field = "type"
            equals = ["ticket.opened"]
        "#,
        );
        let usage = EventData::UsageMetric(UsageMetric {
            account_id: account(),
            metric: "API_Errors".to_owned(),
            value: 12.0,
            user_id: None,
        });
        let tagging = tagger.tag(&usage);
        assert_eq!(tagging.primary, "adoption");
        assert_eq!(
            tagging.matches[0].evidence,
            [Evidence {
                rule: "adoption/errors".to_owned(),
                field: "metric".to_owned(),
                start: 0,
                end: 10,
                text: "API_Errors".to_owned(),
            }]
        );

        let mut urgent = ticket("help", "");
        if let EventData::TicketOpened(opened) = &mut urgent {
            opened.priority = Some(TicketPriority::Urgent);
        }
        let tagging = tagger.tag(&urgent);
        assert_eq!(tagging.primary, "support");
        assert_eq!(tagging.matches[0].score, 2);
        let fields: Vec<&str> = tagging.matches[0]
            .evidence
            .iter()
            .map(|evidence| evidence.field.as_str())
            .collect();
        assert_eq!(fields, ["priority", "type"]);
        assert_eq!(tagger.tag(&ticket("help", "")).matches[0].score, 1);
    }

    #[test]
    fn the_primary_tag_is_the_highest_score_then_taxonomy_order() {
        let tagger = tagger(
            r#"
            [[tag]]
            id = "alpha"
            label = "Alpha"
            [[tag.rule]]
            id = "one"
            keywords = ["login"]

            [[tag]]
            id = "beta"
            label = "Beta"
            [[tag.rule]]
            id = "one"
            keywords = ["login"]

            [[tag]]
            id = "gamma"
            label = "Gamma"
            [[tag.rule]]
            id = "one"
            keywords = ["password"]
            [[tag.rule]]
            id = "two"
            keywords = ["reset"]
        "#,
        );
        let tagging = tagger.tag(&ticket("login", ""));
        assert_eq!(tagging.primary, "alpha");
        assert_eq!(tags_of(&tagging), ["alpha", "beta"]);

        let tagging = tagger.tag(&ticket("login", "password reset"));
        assert_eq!(tagging.primary, "gamma");
        assert_eq!(tags_of(&tagging), ["gamma", "alpha", "beta"]);
        let scores: Vec<u32> = tagging
            .matches
            .iter()
            .map(|tag_match| tag_match.score)
            .collect();
        assert_eq!(scores, [2, 1, 1]);
    }

    #[test]
    fn text_that_matches_nothing_is_uncategorized() {
        let tagger = tagger(BILLING);
        let uncategorized = Tagging {
            primary: UNCATEGORIZED.to_owned(),
            matches: Vec::new(),
        };
        assert_eq!(tagger.tag(&ticket("hello", "how are you")), uncategorized);
        assert_eq!(tagger.tag(&survey(None)), uncategorized);
        assert_eq!(
            tagger.tag(&survey(Some("refund please"))).primary,
            "billing.refund"
        );
    }

    #[test]
    fn an_empty_taxonomy_compiles_and_tags_everything_uncategorized() {
        let tagger = tagger("");
        assert_eq!(tagger.tag_count(), 0);
        assert_eq!(tagger.tag(&ticket("refund", "")).primary, UNCATEGORIZED);
    }

    #[test]
    fn an_invalid_regex_is_reported_with_every_other_problem() {
        let problems = compile_problems(
            r#"
            [[tag]]
            id = "billing.refund"
            label = "Refund"
            [[tag.rule]]
            id = "broken"
            regex = '(unclosed'
            [[tag.rule]]
            id = "two-kinds"
            keywords = ["refund"]
            field = "metric"
            equals = ["x"]

            [[tag]]
            id = "Bad Id"
            label = "Bad"
        "#,
        );
        let expected = [
            "has no parent tag `billing`",
            "rule `billing.refund/broken` has an invalid regex",
            "rule `billing.refund/two-kinds` must have exactly one of",
            "tag id `Bad Id` must be dotted lowercase",
        ];
        for fragment in expected {
            assert!(
                problems.iter().any(|problem| problem.contains(fragment)),
                "{fragment:?} missing from {problems:#?}"
            );
        }
        // The invalid regex is reported once, not again by the RegexSet.
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    }

    #[test]
    fn regexes_that_compile_alone_but_not_together_are_reported() {
        // Each `\w{100}` (Unicode word characters) takes about 4 MB of the regex crate's 10 MB size
        // limit: one compiles alone, five do not compile into one set.
        let rules: String = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|suffix| {
                format!("[[tag.rule]]\nid = \"{suffix}\"\nregex = '\\w{{100}}{suffix}'\n")
            })
            .collect();
        let problems = compile_problems(&format!(
            "[[tag]]\nid = \"huge\"\nlabel = \"Huge\"\n{rules}"
        ));
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("do not compile into one RegexSet"),
            "{problems:#?}"
        );
    }

    #[test]
    fn tag_count_and_contains_describe_the_taxonomy() {
        let tagger = tagger(BILLING);
        assert_eq!(tagger.tag_count(), 2);
        assert!(tagger.contains("billing"));
        assert!(tagger.contains("billing.refund"));
        assert!(!tagger.contains("billing.refunds"));
        assert!(!tagger.contains(UNCATEGORIZED));
    }

    #[test]
    fn the_shipped_taxonomy_compiles_and_tags_obvious_tickets() {
        let taxonomy: TaxonomyConfig = toml::from_str(include_str!("../../config/taxonomy.toml"))
            .expect("config/taxonomy.toml parses");
        let tagger = Tagger::compile(&taxonomy)
            .unwrap_or_else(|problems| panic!("config/taxonomy.toml: {problems:#?}"));
        assert!(tagger.tag_count() >= 40, "{} tags", tagger.tag_count());

        let invoice = tagger.tag(&ticket(
            "Wrong amount on our invoice",
            "The invoice total is incorrect: we were billed for 50 seats but we only have 40.",
        ));
        assert!(invoice.primary.starts_with("billing."), "{invoice:#?}");
        let expected = [
            (
                "Cannot log in",
                "Since this morning I can't log in to my account.",
                "access.login",
            ),
            (
                "Card declined",
                "My credit card was declined at renewal.",
                "payments.card-declined",
            ),
            (
                "Webhook deliveries failing",
                "Our webhook endpoint stopped receiving events.",
                "integrations.webhooks",
            ),
            (
                "Please cancel our subscription",
                "We want to cancel at the end of the month.",
                "churn.cancellation",
            ),
            (
                "Hello",
                "Just wanted to say thanks for the call today.",
                UNCATEGORIZED,
            ),
        ];
        for (subject, body, primary) in expected {
            let tagging = tagger.tag(&ticket(subject, body));
            assert_eq!(tagging.primary, primary, "{tagging:#?}");
        }
        assert_eq!(tagger.tag(&survey(None)).primary, UNCATEGORIZED);
    }
}
