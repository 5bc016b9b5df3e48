//! Users' SSH public keys: added, listed and removed by the administrator,
//! found by their fingerprint at a login.

use sqlx::Row;

use super::{Store, is_unique_violation, to_u64};
use crate::error::{Error, Result};
use crate::keys::{MAX_KEYS_PER_USER, PublicKeyLine};
use wharf_core::time::now_ms;

/// A user's key, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserKey {
    /// `SHA256:...`, as `ssh-keygen -lf` shows it.
    pub fingerprint: String,
    /// The algorithm: `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`.
    pub key_type: String,
    /// The key as OpenSSH writes it, without its comment: `TYPE BASE64`.
    pub public_key: String,
    /// The comment it was added with.
    pub comment: String,
    /// When it was added, unix milliseconds.
    pub added_at: i64,
    /// When it last logged in, unix milliseconds.
    pub last_used_at: Option<i64>,
}

/// The columns a [`UserKey`] is read from.
macro_rules! columns {
    () => {
        "fingerprint, key_type, public_key, comment, added_at, last_used_at"
    };
}

fn key_of(row: &sqlx::any::AnyRow) -> Result<UserKey> {
    Ok(UserKey {
        fingerprint: row.try_get("fingerprint")?,
        key_type: row.try_get("key_type")?,
        public_key: row.try_get("public_key")?,
        comment: row.try_get("comment")?,
        added_at: row.try_get("added_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

impl Store {
    /// Gives user `name` the key `key`; `KeyExists` if they have it,
    /// `TooManyKeys` past [`MAX_KEYS_PER_USER`].
    pub async fn add_key(&self, name: &str, key: &PublicKeyLine) -> Result<UserKey> {
        let mut added = self.add_keys(name, std::slice::from_ref(key)).await?;
        added
            .pop()
            .ok_or_else(|| Error::Internal("no key added".into()))
    }

    /// Gives user `name` every key of `keys`, all or none: one they have
    /// already (or one given twice) is `KeyExists`, more than
    /// [`MAX_KEYS_PER_USER`] in all `TooManyKeys`, and nothing is added.
    pub async fn add_keys(&self, name: &str, keys: &[PublicKeyLine]) -> Result<Vec<UserKey>> {
        let user = self.require_user(name).await?;
        let mut tx = self.pool.begin().await?;
        let held: i64 = sqlx::query("SELECT COUNT(*) AS n FROM user_keys WHERE user_id = $1")
            .bind(user.id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if to_u64(held).saturating_add(keys.len() as u64) > MAX_KEYS_PER_USER {
            return Err(Error::TooManyKeys {
                user: name.to_owned(),
                max: MAX_KEYS_PER_USER,
            });
        }
        let added_at = now_ms();
        let mut added = Vec::with_capacity(keys.len());
        for key in keys {
            let done = sqlx::query(
                "INSERT INTO user_keys (user_id, fingerprint, key_type, public_key, comment, added_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(user.id)
            .bind(key.fingerprint.clone())
            .bind(key.key_type.clone())
            .bind(key.public_key.clone())
            .bind(key.comment.clone())
            .bind(added_at)
            .execute(&mut *tx)
            .await;
            match done {
                Ok(_) => added.push(UserKey {
                    fingerprint: key.fingerprint.clone(),
                    key_type: key.key_type.clone(),
                    public_key: key.public_key.clone(),
                    comment: key.comment.clone(),
                    added_at,
                    last_used_at: None,
                }),
                // The transaction, dropped, takes back what it added.
                Err(e) if is_unique_violation(&e) => {
                    return Err(Error::KeyExists {
                        user: name.to_owned(),
                        fingerprint: key.fingerprint.clone(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        tx.commit().await?;
        Ok(added)
    }

    /// User `name`'s keys, oldest first.
    pub async fn keys(&self, name: &str) -> Result<Vec<UserKey>> {
        let user = self.require_user(name).await?;
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM user_keys WHERE user_id = $1 ORDER BY added_at, id"
        ))
        .bind(user.id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_of).collect()
    }

    /// Takes the key with `fingerprint` from user `name`; `NoSuchKey` if
    /// they have none such.
    pub async fn remove_key(&self, name: &str, fingerprint: &str) -> Result<UserKey> {
        let user = self.require_user(name).await?;
        let row = sqlx::query(concat!(
            "DELETE FROM user_keys WHERE user_id = $1 AND fingerprint = $2 RETURNING ",
            columns!()
        ))
        .bind(user.id)
        .bind(fingerprint.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => key_of(&row),
            None => Err(Error::NoSuchKey {
                user: name.to_owned(),
                fingerprint: fingerprint.to_owned(),
            }),
        }
    }

    /// The key of user `user_id` with `fingerprint`, if they have it,
    /// marked as used now.
    pub async fn use_key(&self, user_id: i64, fingerprint: &str) -> Result<Option<UserKey>> {
        let row = sqlx::query(concat!(
            "UPDATE user_keys SET last_used_at = $1 WHERE user_id = $2 AND fingerprint = $3 \
             RETURNING ",
            columns!()
        ))
        .bind(now_ms())
        .bind(user_id)
        .bind(fingerprint.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_of).transpose()
    }
}
