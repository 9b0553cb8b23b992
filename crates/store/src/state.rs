//! The OpenAI-compatible stored state: responses, conversations and conversation items.
//!
//! Every object carries its tenant, the principal that created it, its label (the canonical
//! banner of the high-water mark of the request labels that wrote it), when it was made and
//! when it expires. Its text — message content, instructions, output, metadata — is a JSON
//! document the gateway shapes, stored only sealed with the tenant's data key (see
//! [`crate::crypt`]) and bound to its row.
//!
//! Reads and deletes take the caller's tenant and session label: an object of another tenant,
//! one whose label the session does not dominate, and one that has expired are all answered
//! `None`, exactly like an id that does not exist, so a caller learns nothing of them.
//! A conversation's label only rises: every write joins the writer's label into it with a
//! compare-and-set, so concurrent writers from several replicas never lower it.

use enclave_label::Label;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::crypt::{TenantCipher, row_aad};
use crate::store::now;
use crate::{Store, StoreError};

/// How often a conversation write retries when another writer changed the conversation first.
const CAS_RETRIES: usize = 16;

/// A stored response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    /// `resp_…`.
    pub id: String,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The principal that created it.
    pub principal: String,
    /// Its label (canonical banner).
    pub label: String,
    /// The response it continued.
    pub previous_response_id: Option<String>,
    /// The conversation it belongs to.
    pub conversation_id: Option<String>,
    /// The response document (plaintext here; sealed at rest).
    pub body: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds after which it is gone (`None`: kept until deleted).
    pub expires_at: Option<i64>,
}

/// A stored conversation (without its items).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredConversation {
    /// `conv_…`.
    pub id: String,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The principal that created it.
    pub principal: String,
    /// Its label (canonical banner): the high-water mark of every write.
    pub label: String,
    /// Its metadata document (plaintext here; sealed at rest).
    pub body: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds after which it is gone (`None`: kept until deleted).
    pub expires_at: Option<i64>,
}

/// One item of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredItem {
    /// `msg_…`.
    pub id: String,
    /// The principal that wrote it.
    pub principal: String,
    /// The label of the request that wrote it (canonical banner).
    pub label: String,
    /// Its position in the conversation, from 0.
    pub seq: i64,
    /// The item document (plaintext here; sealed at rest).
    pub body: Vec<u8>,
    /// Unix seconds.
    pub created_at: i64,
}

/// An item to add: its id and document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewItem {
    /// `msg_…`, unique.
    pub id: String,
    /// The item document.
    pub body: Vec<u8>,
}

/// Rows removed by [`Store::purge_expired`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    /// Responses.
    pub responses: u64,
    /// Conversations (with their items).
    pub conversations: u64,
}

/// Whether a session labeled `session` may see an object labeled `stored` (a banner). A
/// stored label that does not parse is never visible: fail closed.
fn visible(session: &Label, stored: &str) -> bool {
    match stored.parse::<Label>() {
        Ok(label) => session.dominates(&label),
        Err(_) => {
            tracing::error!("a stored object's label does not parse; it is treated as invisible");
            false
        }
    }
}

fn opt_live(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_none_or(|t| t > now)
}

impl Store {
    /// Stores a response, sealing its body under the tenant's key.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] when the id exists, [`StoreError::Database`] (or a key error of
    /// [`Store::tenant_cipher`]) when the database fails.
    pub async fn put_response(&self, r: &StoredResponse) -> Result<(), StoreError> {
        let cipher = self.tenant_cipher(&r.tenant).await?;
        let sealed = cipher.seal(&row_aad("responses", &r.tenant, &r.id), &r.body);
        let done = sqlx::query(
            "INSERT INTO responses (id, tenant, principal, label, previous_response_id, \
             conversation_id, sealed, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&r.id)
        .bind(&r.tenant)
        .bind(&r.principal)
        .bind(&r.label)
        .bind(r.previous_response_id.as_deref())
        .bind(r.conversation_id.as_deref())
        .bind(sealed)
        .bind(r.created_at)
        .bind(r.expires_at)
        .execute(self.pool())
        .await;
        match done {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
                "a response with this id exists".to_owned(),
            )),
            Err(e) => Err(StoreError::database("storing a response")(e)),
        }
    }

    /// The response `id` of `tenant`, if the session labeled `session` may see it and it has
    /// not expired; `None` otherwise (see the module documentation).
    ///
    /// # Errors
    ///
    /// [`StoreError::Crypto`] when the stored body does not authenticate,
    /// [`StoreError::Database`] when the database fails.
    pub async fn response(
        &self,
        tenant: &str,
        id: &str,
        session: &Label,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let action = "reading a response";
        let row = sqlx::query(
            "SELECT id, tenant, principal, label, previous_response_id, conversation_id, sealed, \
             created_at, expires_at FROM responses WHERE id = $1 AND tenant = $2",
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::database(action))?;
        let Some(row) = row else { return Ok(None) };
        let read = |row: &AnyRow| -> Result<(StoredResponse, Vec<u8>), sqlx::Error> {
            Ok((
                StoredResponse {
                    id: row.try_get("id")?,
                    tenant: row.try_get("tenant")?,
                    principal: row.try_get("principal")?,
                    label: row.try_get("label")?,
                    previous_response_id: row.try_get("previous_response_id")?,
                    conversation_id: row.try_get("conversation_id")?,
                    body: Vec::new(),
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                },
                row.try_get("sealed")?,
            ))
        };
        let (mut r, sealed) = read(&row).map_err(StoreError::database(action))?;
        if !visible(session, &r.label) || !opt_live(r.expires_at, now()) {
            return Ok(None);
        }
        let cipher = self.tenant_cipher(tenant).await?;
        r.body = cipher.open(&row_aad("responses", tenant, &r.id), &sealed)?;
        Ok(Some(r))
    }

    /// Deletes the response `id` of `tenant` if the session may see it; whether it did.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the database fails.
    pub async fn delete_response(
        &self,
        tenant: &str,
        id: &str,
        session: &Label,
    ) -> Result<bool, StoreError> {
        let action = "deleting a response";
        let Some((label, expires_at)) = self.label_of("responses", tenant, id).await? else {
            return Ok(false);
        };
        if !visible(session, &label) || !opt_live(expires_at, now()) {
            return Ok(false);
        }
        let done =
            sqlx::query("DELETE FROM responses WHERE id = $1 AND tenant = $2 AND label = $3")
                .bind(id)
                .bind(tenant)
                .bind(&label)
                .execute(self.pool())
                .await
                .map_err(StoreError::database(action))?;
        Ok(done.rows_affected() > 0)
    }

    /// The label and expiry of row `id` of `tenant` in `table` (a constant of this module).
    async fn label_of(
        &self,
        table: &'static str,
        tenant: &str,
        id: &str,
    ) -> Result<Option<(String, Option<i64>)>, StoreError> {
        sqlx::query(&format!(
            "SELECT label, expires_at FROM {table} WHERE id = $1 AND tenant = $2"
        ))
        .bind(id)
        .bind(tenant)
        .fetch_optional(self.pool())
        .await
        .and_then(|row| {
            row.map(|r| Ok((r.try_get("label")?, r.try_get("expires_at")?)))
                .transpose()
        })
        .map_err(StoreError::database("reading a label"))
    }

    /// Creates a conversation labeled `label` with its first `items` (all labeled `label`).
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] when an id exists, [`StoreError::Database`] when the database
    /// fails.
    pub async fn create_conversation(
        &self,
        c: &StoredConversation,
        items: &[NewItem],
    ) -> Result<(), StoreError> {
        let action = "creating a conversation";
        let cipher = self.tenant_cipher(&c.tenant).await?;
        let sealed = cipher.seal(&row_aad("conversations", &c.tenant, &c.id), &c.body);
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(StoreError::database(action))?;
        let n = i64::try_from(items.len()).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "INSERT INTO conversations (id, tenant, principal, label, next_seq, sealed, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&c.id)
        .bind(&c.tenant)
        .bind(&c.principal)
        .bind(&c.label)
        .bind(n)
        .bind(sealed)
        .bind(c.created_at)
        .bind(c.expires_at)
        .execute(&mut *tx)
        .await;
        conflict_or(done, action)?;
        insert_items(&mut tx, &cipher, c, &c.principal, &c.label, 0, items).await?;
        tx.commit().await.map_err(StoreError::database(action))?;
        Ok(())
    }

    /// The conversation `id` of `tenant`, if the session may see it (see the module
    /// documentation).
    ///
    /// # Errors
    ///
    /// [`StoreError::Crypto`] when the stored body does not authenticate,
    /// [`StoreError::Database`] when the database fails.
    pub async fn conversation(
        &self,
        tenant: &str,
        id: &str,
        session: &Label,
    ) -> Result<Option<StoredConversation>, StoreError> {
        let action = "reading a conversation";
        let row = sqlx::query(
            "SELECT id, tenant, principal, label, sealed, created_at, expires_at \
             FROM conversations WHERE id = $1 AND tenant = $2",
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::database(action))?;
        let Some(row) = row else { return Ok(None) };
        let read = |row: &AnyRow| -> Result<(StoredConversation, Vec<u8>), sqlx::Error> {
            Ok((
                StoredConversation {
                    id: row.try_get("id")?,
                    tenant: row.try_get("tenant")?,
                    principal: row.try_get("principal")?,
                    label: row.try_get("label")?,
                    body: Vec::new(),
                    created_at: row.try_get("created_at")?,
                    expires_at: row.try_get("expires_at")?,
                },
                row.try_get("sealed")?,
            ))
        };
        let (mut c, sealed) = read(&row).map_err(StoreError::database(action))?;
        if !visible(session, &c.label) || !opt_live(c.expires_at, now()) {
            return Ok(None);
        }
        let cipher = self.tenant_cipher(tenant).await?;
        c.body = cipher.open(&row_aad("conversations", tenant, &c.id), &sealed)?;
        Ok(Some(c))
    }

    /// The items of conversation `id` of `tenant` in order, if the session may see the
    /// conversation.
    ///
    /// # Errors
    ///
    /// As [`Store::conversation`].
    pub async fn conversation_items(
        &self,
        tenant: &str,
        id: &str,
        session: &Label,
    ) -> Result<Option<Vec<StoredItem>>, StoreError> {
        let action = "reading conversation items";
        if self.conversation(tenant, id, session).await?.is_none() {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT id, principal, label, seq, sealed, created_at FROM conversation_items \
             WHERE conversation_id = $1 AND tenant = $2 ORDER BY seq",
        )
        .bind(id)
        .bind(tenant)
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::database(action))?;
        let cipher = self.tenant_cipher(tenant).await?;
        let mut items = Vec::with_capacity(rows.len());
        for row in &rows {
            let read = || -> Result<(StoredItem, Vec<u8>), sqlx::Error> {
                Ok((
                    StoredItem {
                        id: row.try_get("id")?,
                        principal: row.try_get("principal")?,
                        label: row.try_get("label")?,
                        seq: row.try_get("seq")?,
                        body: Vec::new(),
                        created_at: row.try_get("created_at")?,
                    },
                    row.try_get("sealed")?,
                ))
            };
            let (mut item, sealed) = read().map_err(StoreError::database(action))?;
            item.body = cipher.open(&row_aad("conversation_items", tenant, &item.id), &sealed)?;
            items.push(item);
        }
        Ok(Some(items))
    }

    /// Appends `items`, written by `principal` at request label `label`, to conversation `id`
    /// of `tenant` if the session may see it, and raises the conversation's label to include
    /// `label` (it never falls). Returns the conversation's new label, or `None` when the
    /// conversation is not there for this session.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] when an item id exists or other writers kept changing the
    /// conversation, [`StoreError::Database`] when the database fails.
    pub async fn append_items(
        &self,
        tenant: &str,
        id: &str,
        session: &Label,
        principal: &str,
        label: &Label,
        items: &[NewItem],
    ) -> Result<Option<Label>, StoreError> {
        let action = "appending to a conversation";
        let cipher = self.tenant_cipher(tenant).await?;
        for _ in 0..CAS_RETRIES {
            let row = sqlx::query(
                "SELECT label, next_seq, expires_at FROM conversations \
                 WHERE id = $1 AND tenant = $2",
            )
            .bind(id)
            .bind(tenant)
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::database(action))?;
            let Some(row) = row else { return Ok(None) };
            let read = || -> Result<(String, i64, Option<i64>), sqlx::Error> {
                Ok((
                    row.try_get("label")?,
                    row.try_get("next_seq")?,
                    row.try_get("expires_at")?,
                ))
            };
            let (old, next, expires_at) = read().map_err(StoreError::database(action))?;
            if !visible(session, &old) || !opt_live(expires_at, now()) {
                return Ok(None);
            }
            let Ok(old_label) = old.parse::<Label>() else {
                return Ok(None);
            };
            let new_label = old_label.join(label);
            let new_banner = new_label.banner();
            let n = i64::try_from(items.len()).unwrap_or(i64::MAX);
            let mut tx = self
                .pool()
                .begin()
                .await
                .map_err(StoreError::database(action))?;
            // Compare-and-set: only if nobody changed the conversation since it was read.
            let done = sqlx::query(
                "UPDATE conversations SET label = $1, next_seq = $2 \
                 WHERE id = $3 AND tenant = $4 AND label = $5 AND next_seq = $6",
            )
            .bind(&new_banner)
            .bind(next.saturating_add(n))
            .bind(id)
            .bind(tenant)
            .bind(&old)
            .bind(next)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::database(action))?;
            if done.rows_affected() == 0 {
                drop(tx);
                continue;
            }
            let conv = ConvRef { id, tenant };
            insert_items(
                &mut tx,
                &cipher,
                &conv,
                principal,
                &label.banner(),
                next,
                items,
            )
            .await?;
            tx.commit().await.map_err(StoreError::database(action))?;
            return Ok(Some(new_label));
        }
        Err(StoreError::Conflict(
            "the conversation kept changing under concurrent writers: retry".to_owned(),
        ))
    }

    /// Replaces the metadata document of conversation `id` of `tenant` with `body`, written at
    /// request label `label`, if the session may see the conversation, and raises its label to
    /// include `label` (it never falls). Returns the conversation as it now is, or `None` when
    /// it is not there for this session.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] when other writers kept changing the conversation's label,
    /// [`StoreError::Database`] when the database fails.
    pub async fn update_conversation(
        &self,
        tenant: &str,
        id: &str,
        session: &Label,
        label: &Label,
        body: &[u8],
    ) -> Result<Option<StoredConversation>, StoreError> {
        let action = "updating a conversation";
        let cipher = self.tenant_cipher(tenant).await?;
        let sealed = cipher.seal(&row_aad("conversations", tenant, id), body);
        for _ in 0..CAS_RETRIES {
            let row = sqlx::query(
                "SELECT principal, label, created_at, expires_at FROM conversations \
                 WHERE id = $1 AND tenant = $2",
            )
            .bind(id)
            .bind(tenant)
            .fetch_optional(self.pool())
            .await
            .map_err(StoreError::database(action))?;
            let Some(row) = row else { return Ok(None) };
            let read = || -> Result<(String, String, i64, Option<i64>), sqlx::Error> {
                Ok((
                    row.try_get("principal")?,
                    row.try_get("label")?,
                    row.try_get("created_at")?,
                    row.try_get("expires_at")?,
                ))
            };
            let (principal, old, created_at, expires_at) =
                read().map_err(StoreError::database(action))?;
            if !visible(session, &old) || !opt_live(expires_at, now()) {
                return Ok(None);
            }
            let Ok(old_label) = old.parse::<Label>() else {
                return Ok(None);
            };
            let new_banner = old_label.join(label).banner();
            // Compare-and-set on the label: a concurrent write that raised it is not undone.
            let done = sqlx::query(
                "UPDATE conversations SET label = $1, sealed = $2 \
                 WHERE id = $3 AND tenant = $4 AND label = $5",
            )
            .bind(&new_banner)
            .bind(&sealed)
            .bind(id)
            .bind(tenant)
            .bind(&old)
            .execute(self.pool())
            .await
            .map_err(StoreError::database(action))?;
            if done.rows_affected() == 0 {
                continue;
            }
            return Ok(Some(StoredConversation {
                id: id.to_owned(),
                tenant: tenant.to_owned(),
                principal,
                label: new_banner,
                body: body.to_vec(),
                created_at,
                expires_at,
            }));
        }
        Err(StoreError::Conflict(
            "the conversation kept changing under concurrent writers: retry".to_owned(),
        ))
    }

    /// Deletes conversation `id` of `tenant` and its items if the session may see it; whether
    /// it did.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the database fails.
    pub async fn delete_conversation(
        &self,
        tenant: &str,
        id: &str,
        session: &Label,
    ) -> Result<bool, StoreError> {
        let action = "deleting a conversation";
        let Some((label, expires_at)) = self.label_of("conversations", tenant, id).await? else {
            return Ok(false);
        };
        if !visible(session, &label) || !opt_live(expires_at, now()) {
            return Ok(false);
        }
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(StoreError::database(action))?;
        let done =
            sqlx::query("DELETE FROM conversations WHERE id = $1 AND tenant = $2 AND label = $3")
                .bind(id)
                .bind(tenant)
                .bind(&label)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::database(action))?;
        if done.rows_affected() == 0 {
            // Its label rose since it was read: this session may no longer see it.
            return Ok(false);
        }
        sqlx::query("DELETE FROM conversation_items WHERE conversation_id = $1 AND tenant = $2")
            .bind(id)
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::database(action))?;
        tx.commit().await.map_err(StoreError::database(action))?;
        Ok(true)
    }

    /// Deletes item `item` of conversation `id` of `tenant` if the session may see the
    /// conversation; whether it did. The conversation's label stays as it is (it never
    /// falls).
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the database fails.
    pub async fn delete_item(
        &self,
        tenant: &str,
        id: &str,
        item: &str,
        session: &Label,
    ) -> Result<bool, StoreError> {
        let Some((label, expires_at)) = self.label_of("conversations", tenant, id).await? else {
            return Ok(false);
        };
        if !visible(session, &label) || !opt_live(expires_at, now()) {
            return Ok(false);
        }
        let done = sqlx::query(
            "DELETE FROM conversation_items WHERE id = $1 AND conversation_id = $2 AND tenant = $3",
        )
        .bind(item)
        .bind(id)
        .bind(tenant)
        .execute(self.pool())
        .await
        .map_err(StoreError::database("deleting a conversation item"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes every response and conversation (with its items) that expired at or before
    /// `now` (unix seconds), for the retention task.
    ///
    /// # Errors
    ///
    /// [`StoreError::Database`] when the database fails.
    pub async fn purge_expired(&self, now: i64) -> Result<Purged, StoreError> {
        let action = "purging expired state";
        let responses =
            sqlx::query("DELETE FROM responses WHERE expires_at IS NOT NULL AND expires_at <= $1")
                .bind(now)
                .execute(self.pool())
                .await
                .map_err(StoreError::database(action))?
                .rows_affected();
        sqlx::query(
            "DELETE FROM conversation_items WHERE conversation_id IN (SELECT id FROM \
             conversations WHERE expires_at IS NOT NULL AND expires_at <= $1)",
        )
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(StoreError::database(action))?;
        let conversations = sqlx::query(
            "DELETE FROM conversations WHERE expires_at IS NOT NULL AND expires_at <= $1",
        )
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(StoreError::database(action))?
        .rows_affected();
        Ok(Purged {
            responses,
            conversations,
        })
    }
}

/// What [`insert_items`] needs of the conversation.
trait Conversation {
    fn id(&self) -> &str;
    fn tenant(&self) -> &str;
}

struct ConvRef<'a> {
    id: &'a str,
    tenant: &'a str,
}

impl Conversation for ConvRef<'_> {
    fn id(&self) -> &str {
        self.id
    }
    fn tenant(&self) -> &str {
        self.tenant
    }
}

impl Conversation for StoredConversation {
    fn id(&self) -> &str {
        &self.id
    }
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

async fn insert_items(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    cipher: &TenantCipher,
    conv: &impl Conversation,
    principal: &str,
    label: &str,
    first_seq: i64,
    items: &[NewItem],
) -> Result<(), StoreError> {
    let created_at = now();
    for (seq, item) in (first_seq..).zip(items) {
        let sealed = cipher.seal(
            &row_aad("conversation_items", conv.tenant(), &item.id),
            &item.body,
        );
        let done = sqlx::query(
            "INSERT INTO conversation_items (id, conversation_id, tenant, principal, label, seq, \
             sealed, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&item.id)
        .bind(conv.id())
        .bind(conv.tenant())
        .bind(principal)
        .bind(label)
        .bind(seq)
        .bind(sealed)
        .bind(created_at)
        .execute(&mut **tx)
        .await;
        conflict_or(done, "storing a conversation item")?;
    }
    Ok(())
}

fn conflict_or(
    done: Result<sqlx::any::AnyQueryResult, sqlx::Error>,
    action: &'static str,
) -> Result<(), StoreError> {
    match done {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
            "an object with this id exists".to_owned(),
        )),
        Err(e) => Err(StoreError::database(action)(e)),
    }
}
