//! Column layout of captured tables: names, value kinds, primary key and
//! tenant column, read from binlog table maps (full row metadata) or from a
//! snapshot result set plus `information_schema`.

use super::convert::{Collations, ColumnKind, TextEncoding};
use mysql_async::binlog::events::{OptionalMetadataField, TableMapEvent};
use mysql_async::consts::ColumnFlags;
use mysql_async::Column;
use std::collections::HashMap;

/// Errors reading a table layout.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("table map of {table} is malformed")]
    Malformed {
        table: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "table map of {table} has no column names (set binlog_row_metadata=FULL on the source)"
    )]
    NoColumnNames { table: String },
}

/// One column of a captured table.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnInfo {
    pub name: String,
    pub kind: ColumnKind,
}

/// Layout of one captured table as of one table map (or one snapshot query).
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    pub table: String,
    pub columns: Vec<ColumnInfo>,
    /// Indexes into `columns` of the primary-key columns, in key order.
    pub pk: Vec<usize>,
    /// Index into `columns` of the tenant column, `None` when the table lacks it.
    pub tenant: Option<usize>,
    by_name: HashMap<String, usize>,
}

impl TableInfo {
    /// Builds the layout from columns, the tenant column name and the primary-key column names.
    pub fn new(
        table: &str,
        columns: Vec<ColumnInfo>,
        tenant_column: &str,
        pk_names: &[String],
    ) -> Self {
        let by_name: HashMap<String, usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let pk = pk_names
            .iter()
            .filter_map(|n| by_name.get(n).copied())
            .collect();
        let tenant = by_name.get(tenant_column).copied();
        TableInfo {
            table: table.to_string(),
            columns,
            pk,
            tenant,
            by_name,
        }
    }

    /// Index of the column named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Column names in table order.
    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    /// Layout of a snapshot result set (`SELECT *`), whose columns carry types and flags.
    pub fn from_result_columns(
        table: &str,
        columns: &[Column],
        collations: &Collations,
        tenant_column: &str,
        pk_names: &[String],
    ) -> Self {
        let cols = columns
            .iter()
            .map(|c| ColumnInfo {
                name: c.name_str().into_owned(),
                kind: ColumnKind::from_type(
                    c.column_type(),
                    c.flags(),
                    collations.encoding(c.character_set()),
                    Vec::new(),
                ),
            })
            .collect();
        TableInfo::new(table, cols, tenant_column, pk_names)
    }
}

/// What a binlog table map says about a table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableMapLayout {
    pub columns: Vec<ColumnInfo>,
    /// Primary-key column indexes, when the table map carries them (full metadata).
    pub pk: Option<Vec<usize>>,
}

/// Reads columns, kinds and (when present) the primary key from a table map
/// event written with `binlog_row_metadata=FULL`.
pub fn layout_of_table_map(
    tme: &TableMapEvent<'_>,
    collations: &Collations,
) -> Result<TableMapLayout, SchemaError> {
    let table = tme.table_name().into_owned();
    let malformed = |source: std::io::Error| SchemaError::Malformed {
        table: table.clone(),
        source,
    };
    let count = usize::try_from(tme.columns_count()).unwrap_or(0);

    let mut names: Vec<String> = Vec::new();
    let mut enum_members: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut set_members: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut pk: Option<Vec<usize>> = None;
    let mut text_charsets = CharsetMeta::default();
    let mut enum_set_charsets = CharsetMeta::default();

    for field in tme.iter_optional_meta() {
        match field.map_err(malformed)? {
            OptionalMetadataField::ColumnName(n) => {
                for name in n.iter_names() {
                    names.push(name.map_err(malformed)?.name().into_owned());
                }
            }
            OptionalMetadataField::EnumStrValue(v) => {
                for members in v.iter_values() {
                    let members = members.map_err(malformed)?;
                    enum_members.push(
                        members
                            .values()
                            .iter()
                            .map(|m| m.value_raw().to_vec())
                            .collect(),
                    );
                }
            }
            OptionalMetadataField::SetStrValue(v) => {
                for members in v.iter_values() {
                    let members = members.map_err(malformed)?;
                    set_members.push(
                        members
                            .values()
                            .iter()
                            .map(|m| m.value_raw().to_vec())
                            .collect(),
                    );
                }
            }
            OptionalMetadataField::SimplePrimaryKey(k) => {
                let mut idx = Vec::new();
                for i in k.iter_indexes() {
                    idx.push(usize::try_from(i.map_err(malformed)?).unwrap_or(usize::MAX));
                }
                pk = Some(idx);
            }
            OptionalMetadataField::PrimaryKeyWithPrefix(k) => {
                let mut idx = Vec::new();
                for key in k.iter_keys() {
                    idx.push(
                        usize::try_from(key.map_err(malformed)?.column_index())
                            .unwrap_or(usize::MAX),
                    );
                }
                pk = Some(idx);
            }
            OptionalMetadataField::DefaultCharset(c) => {
                text_charsets.set_default(&c).map_err(malformed)?
            }
            OptionalMetadataField::ColumnCharset(c) => {
                text_charsets.set_per_column(&c).map_err(malformed)?
            }
            OptionalMetadataField::EnumAndSetDefaultCharset(c) => {
                enum_set_charsets.set_default(&c).map_err(malformed)?
            }
            OptionalMetadataField::EnumAndSetColumnCharset(c) => {
                enum_set_charsets.set_per_column(&c).map_err(malformed)?
            }
            _ => {}
        }
    }
    if names.len() != count {
        return Err(SchemaError::NoColumnNames { table });
    }

    // Charset metadata lists character (or ENUM/SET) columns only, in order.
    let mut columns = Vec::with_capacity(count);
    let mut char_idx = 0usize;
    let mut enum_set_idx = 0usize;
    let mut enum_idx = 0usize;
    let mut set_idx = 0usize;
    for (i, name) in names.into_iter().enumerate() {
        let ty = match tme.get_column_type(i) {
            Ok(Some(ty)) => ty,
            Ok(None) | Err(_) => mysql_async::consts::ColumnType::MYSQL_TYPE_UNKNOWN,
        };
        let mut encoding = TextEncoding::Utf8;
        if ty.is_character_type() {
            encoding = text_charsets
                .charset(char_idx)
                .map(|c| collations.encoding(c))
                .unwrap_or(TextEncoding::Utf8);
            char_idx += 1;
        }
        let raw_members = if ty.is_enum_or_set_type() {
            encoding = enum_set_charsets
                .charset(enum_set_idx)
                .map(|c| collations.encoding(c))
                .unwrap_or(TextEncoding::Utf8);
            enum_set_idx += 1;
            if ty.is_enum_type() {
                enum_idx += 1;
                enum_members.get(enum_idx - 1).cloned().unwrap_or_default()
            } else {
                set_idx += 1;
                set_members.get(set_idx - 1).cloned().unwrap_or_default()
            }
        } else {
            Vec::new()
        };
        let members = raw_members
            .into_iter()
            .map(|m| encoding.decode(m))
            .collect();
        columns.push(ColumnInfo {
            name,
            kind: ColumnKind::from_type(ty, ColumnFlags::empty(), encoding, members),
        });
    }
    if let Some(idx) = &pk {
        if idx.iter().any(|i| *i >= count) {
            pk = None;
        }
    }
    Ok(TableMapLayout { columns, pk })
}

/// Character sets of the character (or ENUM/SET) columns of a table map:
/// a default with exceptions, or one per column. Indexes count those columns only.
#[derive(Default)]
struct CharsetMeta {
    default: Option<u16>,
    exceptions: Vec<(usize, u16)>,
    per_column: Option<Vec<u16>>,
}

impl CharsetMeta {
    fn set_default(
        &mut self,
        c: &mysql_async::binlog::events::DefaultCharset<'_>,
    ) -> std::io::Result<()> {
        self.default = Some(c.default_charset());
        for nd in c.iter_non_default() {
            let nd = nd?;
            self.exceptions.push((
                usize::try_from(nd.column_index()).unwrap_or(usize::MAX),
                nd.charset(),
            ));
        }
        Ok(())
    }

    fn set_per_column(
        &mut self,
        c: &mysql_async::binlog::events::ColumnCharsets<'_>,
    ) -> std::io::Result<()> {
        let mut v = Vec::new();
        for cs in c.iter_charsets() {
            v.push(cs?);
        }
        self.per_column = Some(v);
        Ok(())
    }

    fn charset(&self, idx: usize) -> Option<u16> {
        match &self.per_column {
            Some(v) => v.get(idx).copied(),
            None => self
                .exceptions
                .iter()
                .find(|(i, _)| *i == idx)
                .map(|(_, c)| *c)
                .or(self.default),
        }
    }
}

/// Quotes an identifier for MySQL (backticks, doubled inside).
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn col(name: &str) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            kind: ColumnKind::Int,
        }
    }

    #[test]
    fn tenant_and_pk_are_resolved_by_name() {
        let t = TableInfo::new(
            "order_items",
            vec![col("order_id"), col("line"), col("merchant_id"), col("qty")],
            "merchant_id",
            &["order_id".to_string(), "line".to_string()],
        );
        assert_eq!(t.pk, vec![0, 1]);
        assert_eq!(t.tenant, Some(2));
        assert_eq!(t.index_of("qty"), Some(3));
        let no_tenant = TableInfo::new("x", vec![col("id")], "merchant_id", &["id".to_string()]);
        assert_eq!(no_tenant.tenant, None);
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("orders"), "`orders`");
        assert_eq!(quote_ident("we`ird"), "`we``ird`");
    }
}
