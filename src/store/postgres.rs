//! (in progress)
pub struct PgStore;
impl PgStore {
    pub async fn open(_url: &str) -> Result<Self, super::StoreError> {
        todo!()
    }
}
