"""remflow: restore electron-microscopy images with tk_r_em and measure atom-column precision."""

__version__ = "0.1.0"
