//! (in progress)
pub struct SqliteStore;
impl SqliteStore {
    pub async fn open(_url: &str) -> Result<Self, super::StoreError> {
        todo!()
    }
}
