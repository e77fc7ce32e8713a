//! Card-list changes as the card platform hands them out (docs/canteen-protocol.md §7):
//! `{"cursor": "...", "changes": [...]}`, the same format as a `card_list` file.

use serde::{Deserialize, Serialize};

use crate::ledger::Change;

/// One batch of changes and the cursor after it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeSet {
    /// The platform's position after these changes (opaque), stored with them.
    #[serde(default)]
    pub cursor: Option<String>,
    /// The changes, applied in order, each id once.
    pub changes: Vec<Change>,
}
