@echo off
rem Launcher of the installer built on Linux (packaging/windows/build_nsis.sh without --payload).
rem That installer carries no frozen app (no Windows Python can be fetched on the build machine):
rem it runs Tunegraph from the bundled wheel with the bundled uv, which fetches Python 3.11 and
rem the dependencies from the network on first start. The CI installer ships the frozen app.
setlocal
set "HERE=%~dp0"
set "UV_PYTHON_INSTALL_DIR=%LOCALAPPDATA%\Tunegraph\python"
set "UV_CACHE_DIR=%LOCALAPPDATA%\Tunegraph\uv-cache"
for %%W in ("%HERE%wheels\tunegraph-*.whl") do set "WHEEL=%%~fW"
"%HERE%uv.exe" tool run --python 3.11 --from "%WHEEL%" tunegraph %*
