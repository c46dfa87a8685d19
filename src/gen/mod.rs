// TEMPORARY STUB (replaced by the gen helper)
pub struct GenOptions { pub accounts: usize, pub events: usize, pub seed: u64, pub start: crate::domain::Millis }
impl Default for GenOptions { fn default() -> Self { GenOptions { accounts: 1, events: 1, seed: 1, start: 0 } } }
pub fn generate(_options: &GenOptions) -> impl Iterator<Item = String> { std::iter::empty() }
pub fn write_ndjson(_options: &GenOptions, _out: &mut impl std::io::Write) -> std::io::Result<u64> { Ok(0) }
