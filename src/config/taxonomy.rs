//! `taxonomy.toml`: the shared issue taxonomy, a tree of tags with dotted ids and their rules.

use std::collections::HashSet;

use serde::Deserialize;

/// The tag of an event that no rule matched.
pub const UNCATEGORIZED: &str = "uncategorized";

/// Text fields that text rules may look at.
pub const TEXT_FIELDS: [&str; 4] = ["subject", "body", "comment", "resolution"];

/// Structured fields that field rules may test.
pub const STRUCTURED_FIELDS: [&str; 9] = [
    "type",
    "priority",
    "channel",
    "product_area",
    "journey_stage",
    "status",
    "metric",
    "milestone",
    "touchpoint",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaxonomyConfig {
    #[serde(rename = "tag", default)]
    pub tags: Vec<TagConfig>,
}

/// One node of the taxonomy. Its parent is the id without its last dotted segment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagConfig {
    /// Dotted id, lowercase `a-z0-9-` segments: `billing.invoice-error`.
    pub id: String,
    pub label: String,
    /// The CX owner of this part of the journey (a person or a CX queue's owner); inherited by children.
    #[serde(default)]
    pub cx_owner: Option<String>,
    #[serde(rename = "rule", default)]
    pub rules: Vec<RuleConfig>,
}

/// One rule: exactly one of `keywords`, `phrases`, `regex` or `field` (with `equals`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique within its tag; evidence names it as `{tag}/{id}`.
    pub id: String,
    /// Single words, matched case-insensitively on word boundaries.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Multi-word phrases, matched case-insensitively on word boundaries.
    #[serde(default)]
    pub phrases: Vec<String>,
    /// A regular expression (Rust `regex` syntax) searched in the text fields.
    #[serde(default)]
    pub regex: Option<String>,
    /// A structured field (see [`STRUCTURED_FIELDS`]) whose value must equal one of `equals`
    /// (case-insensitive).
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub equals: Vec<String>,
    /// Text fields a text rule looks at; all of [`TEXT_FIELDS`] when empty.
    #[serde(default)]
    pub fields: Vec<String>,
    /// Rank contribution when the rule matches; the primary tag has the largest sum of weights.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

impl TaxonomyConfig {
    /// Every structural problem at once, as sentences naming the tag and rule.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        let ids: HashSet<&str> = self.tags.iter().map(|tag| tag.id.as_str()).collect();
        for tag in &self.tags {
            if !is_valid_tag_id(&tag.id) {
                problems.push(format!(
                    "taxonomy: tag id `{}` must be dotted lowercase segments of a-z, 0-9 and -",
                    tag.id
                ));
            }
            if tag.id == UNCATEGORIZED {
                problems.push(format!("taxonomy: tag id `{UNCATEGORIZED}` is reserved"));
            }
            if !seen.insert(tag.id.as_str()) {
                problems.push(format!("taxonomy: tag `{}` is defined twice", tag.id));
            }
            if let Some((parent, _)) = tag.id.rsplit_once('.') {
                if !ids.contains(parent) {
                    problems.push(format!(
                        "taxonomy: tag `{}` has no parent tag `{parent}`",
                        tag.id
                    ));
                }
            }
            let mut rule_ids = HashSet::new();
            for rule in &tag.rules {
                if !rule_ids.insert(rule.id.as_str()) {
                    problems.push(format!(
                        "taxonomy: tag `{}` has two rules named `{}`",
                        tag.id, rule.id
                    ));
                }
                problems.extend(rule.validate(&tag.id));
            }
        }
        problems
    }

    /// The CX owner of a tag: its own, else its nearest ancestor's.
    pub fn cx_owner(&self, tag_id: &str) -> Option<&str> {
        let mut current = tag_id;
        loop {
            if let Some(tag) = self.tags.iter().find(|tag| tag.id == current) {
                if let Some(owner) = tag.cx_owner.as_deref() {
                    return Some(owner);
                }
            }
            match current.rsplit_once('.') {
                Some((parent, _)) => current = parent,
                None => return None,
            }
        }
    }
}

impl RuleConfig {
    fn validate(&self, tag_id: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let name = format!("taxonomy: rule `{tag_id}/{}`", self.id);
        let kinds = [
            !self.keywords.is_empty(),
            !self.phrases.is_empty(),
            self.regex.is_some(),
            self.field.is_some(),
        ];
        if kinds.iter().filter(|present| **present).count() != 1 {
            problems.push(format!(
                "{name} must have exactly one of keywords, phrases, regex or field"
            ));
        }
        if let Some(pattern) = &self.regex {
            if let Err(error) = regex::Regex::new(pattern) {
                problems.push(format!("{name} has an invalid regex: {error}"));
            }
        }
        if let Some(field) = &self.field {
            if !STRUCTURED_FIELDS.contains(&field.as_str()) {
                problems.push(format!(
                    "{name} tests unknown field `{field}` (known: {})",
                    STRUCTURED_FIELDS.join(", ")
                ));
            }
            if self.equals.is_empty() {
                problems.push(format!(
                    "{name} tests field `{field}` but lists no `equals` values"
                ));
            }
        } else if !self.equals.is_empty() {
            problems.push(format!("{name} lists `equals` values without a `field`"));
        }
        for field in &self.fields {
            if !TEXT_FIELDS.contains(&field.as_str()) {
                problems.push(format!(
                    "{name} looks at unknown text field `{field}` (known: {})",
                    TEXT_FIELDS.join(", ")
                ));
            }
        }
        for keyword in &self.keywords {
            if keyword.trim().is_empty() || keyword.split_whitespace().count() != 1 {
                problems.push(format!(
                    "{name} keyword `{keyword}` must be one word (use phrases for several)"
                ));
            }
        }
        for phrase in &self.phrases {
            if phrase.trim().is_empty() {
                problems.push(format!("{name} has an empty phrase"));
            }
        }
        if self.weight == 0 {
            problems.push(format!("{name} must have a weight of at least 1"));
        }
        problems
    }
}

fn is_valid_tag_id(id: &str) -> bool {
    !id.is_empty()
        && id.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        })
}
