//! Login bookkeeping: failures per name and per source address, and the
//! last successful login.

use sqlx::Row;

use super::Store;
use crate::error::Result;

impl Store {
    /// Times (unix ms, oldest first) of failed logins for `name` since `since`.
    pub async fn failures_since(&self, name: &str, since: i64) -> Result<Vec<i64>> {
        let rows =
            sqlx::query("SELECT at FROM login_failures WHERE name = $1 AND at >= $2 ORDER BY at")
                .bind(name)
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| Ok(r.try_get("at")?)).collect()
    }

    /// Times (unix ms, oldest first) of failed logins from `source` since
    /// `since`.
    pub async fn source_failures_since(&self, source: &str, since: i64) -> Result<Vec<i64>> {
        let rows =
            sqlx::query("SELECT at FROM login_failures WHERE source = $1 AND at >= $2 ORDER BY at")
                .bind(source)
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| Ok(r.try_get("at")?)).collect()
    }

    /// Records a failed login for `name` from `source`, and forgets
    /// failures older than `forget_before`.
    pub async fn record_failure(
        &self,
        name: &str,
        source: &str,
        at: i64,
        forget_before: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM login_failures WHERE at < $1")
            .bind(forget_before)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO login_failures (name, source, at) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(source)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets every failed login of `name` (an admin unlock).
    pub async fn clear_failures(&self, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM login_failures WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets the failed logins of `name` from `source` (its right
    /// password from there): others' failures on the name stay.
    pub async fn clear_failures_from(&self, name: &str, source: &str) -> Result<()> {
        sqlx::query("DELETE FROM login_failures WHERE name = $1 AND source = $2")
            .bind(name)
            .bind(source)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a successful login.
    pub async fn record_login(&self, user_id: i64, at: i64) -> Result<()> {
        sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
            .bind(at)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
