//! Validated request parameters and the rows the API serves.

pub mod params;
pub mod rows;

pub use params::{
    DayRange, Limit, MerchantId, PageToken, ParamError, RawRowsParams, ReportShape, RowsParams,
};
pub use rows::{page, sort_rows, OrderedObject, ReportRow, SortKey};
