; Tunegraph per-user installer (NSIS 3). Built by packaging/windows/build_nsis.sh with makensis:
;   makensis -DVERSION=0.1.0 -DPAYLOAD=DIR -DFILES=files.nsh -DUNFILES=unfiles.nsh
;            -DGUI_EXE=tunegraph-gui.exe -DICON=tunegraph.ico -DOUTFILE=Tunegraph-0.1.0-setup.exe
;            tunegraph.nsi
; PAYLOAD is the folder installed as is (the frozen app, uv.exe, wheels\, python\). build_nsis.sh
; writes FILES (the File lines) and UNFILES (the matching Delete/RMDir lines) from it, so the
; uninstaller removes exactly what was installed and never a folder the user chose wholesale.
;
; No administrator rights: everything goes under the user's own profile.
;   program   %LOCALAPPDATA%\Programs\Tunegraph           (removed by the uninstaller)
;   data      %LOCALAPPDATA%\Tunegraph (runs, library, engine\)   (kept unless asked)
; Silent use:  setup.exe /S [/D=DIR]   uninstall.exe /S [/REMOVEDATA]

; 64-bit installer: the app is x64-only, and Wine needs no i386 multiarch to run it.
Target amd64-unicode
!ifndef VERSION | PAYLOAD | FILES | UNFILES | GUI_EXE | ICON | OUTFILE
  !error "define VERSION, PAYLOAD, FILES, UNFILES, GUI_EXE, ICON and OUTFILE (see build_nsis.sh)"
!endif

!define APP "Tunegraph"
!define UNINST_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\${APP}"
!define APP_KEY "Software\${APP}"

Name "${APP} ${VERSION}"
OutFile "${OUTFILE}"
RequestExecutionLevel user
InstallDir "$LOCALAPPDATA\Programs\${APP}"
InstallDirRegKey HKCU "${APP_KEY}" "InstallDir"
SetCompressor /SOLID lzma
ManifestDPIAware true
BrandingText "${APP} ${VERSION}"

!include MUI2.nsh
!include FileFunc.nsh
!include LogicLib.nsh
!include Sections.nsh

!define MUI_ICON "${ICON}"
!define MUI_UNICON "${ICON}"
!define MUI_ABORTWARNING
!define MUI_FINISHPAGE_RUN "$INSTDIR\${GUI_EXE}"
!define MUI_FINISHPAGE_RUN_TEXT "Start ${APP}"
!define MUI_FINISHPAGE_TEXT "${APP} is installed. On first start it offers to set up the training engine (PyTorch matched to your GPU driver) in $LOCALAPPDATA\${APP}\engine."

!insertmacro MUI_PAGE_WELCOME
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH

!define MUI_COMPONENTSPAGE_TEXT_TOP "Your runs, adapters, GGUF files and the training engine are kept unless you tick the second box."
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_COMPONENTS
!insertmacro MUI_UNPAGE_INSTFILES

!insertmacro MUI_LANGUAGE "English"

VIProductVersion "${VERSION}.0"
VIAddVersionKey /LANG=${LANG_ENGLISH} "ProductName" "${APP}"
VIAddVersionKey /LANG=${LANG_ENGLISH} "ProductVersion" "${VERSION}"
VIAddVersionKey /LANG=${LANG_ENGLISH} "FileVersion" "${VERSION}"
VIAddVersionKey /LANG=${LANG_ENGLISH} "FileDescription" "${APP} installer"
VIAddVersionKey /LANG=${LANG_ENGLISH} "LegalCopyright" "The Tunegraph authors, Apache-2.0"

Function .onInit
  SetShellVarContext current
FunctionEnd

Section "${APP}" SecApp
  SectionIn RO
  SetOutPath "$INSTDIR"
  ; An upgrade replaces the program files; the data folder is elsewhere and never touched.
  IfFileExists "$INSTDIR\uninstall.exe" 0 +2
    ExecWait '"$INSTDIR\uninstall.exe" /S _?=$INSTDIR'
  !include "${FILES}"
  File "/oname=$INSTDIR\tunegraph.ico" "${ICON}"
  WriteUninstaller "$INSTDIR\uninstall.exe"

  CreateShortCut "$SMPROGRAMS\${APP}.lnk" "$INSTDIR\${GUI_EXE}" "" "$INSTDIR\tunegraph.ico" 0

  WriteRegStr HKCU "${APP_KEY}" "InstallDir" "$INSTDIR"
  WriteRegStr HKCU "${APP_KEY}" "Version" "${VERSION}"
  WriteRegStr HKCU "${UNINST_KEY}" "DisplayName" "${APP}"
  WriteRegStr HKCU "${UNINST_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${UNINST_KEY}" "Publisher" "The Tunegraph authors"
  WriteRegStr HKCU "${UNINST_KEY}" "DisplayIcon" "$INSTDIR\tunegraph.ico"
  WriteRegStr HKCU "${UNINST_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKCU "${UNINST_KEY}" "UninstallString" '"$INSTDIR\uninstall.exe"'
  WriteRegStr HKCU "${UNINST_KEY}" "QuietUninstallString" '"$INSTDIR\uninstall.exe" /S'
  WriteRegDWORD HKCU "${UNINST_KEY}" "NoModify" 1
  WriteRegDWORD HKCU "${UNINST_KEY}" "NoRepair" 1
  ${GetSize} "$INSTDIR" "/S=0K" $0 $1 $2
  IntFmt $0 "0x%08X" $0
  WriteRegDWORD HKCU "${UNINST_KEY}" "EstimatedSize" "$0"
SectionEnd

; -- uninstaller ------------------------------------------------------------------------------
Section "un.Program files" SecUnApp
  SectionIn RO
  Delete "$SMPROGRAMS\${APP}.lnk"
  !include "${UNFILES}"
  Delete "$INSTDIR\tunegraph.ico"
  Delete "$INSTDIR\uninstall.exe"
  RMDir "$INSTDIR"
  DeleteRegKey HKCU "${UNINST_KEY}"
  DeleteRegKey HKCU "${APP_KEY}"
SectionEnd

Section /o "un.My runs, library and training engine (%LOCALAPPDATA%\Tunegraph)" SecUnData
  RMDir /r "$LOCALAPPDATA\${APP}"
SectionEnd

; /REMOVEDATA (silent or not) ticks the data box; without it the data stays.
Function un.onInit
  SetShellVarContext current
  ${GetParameters} $0
  ClearErrors
  ${GetOptions} $0 "/REMOVEDATA" $1
  ${IfNot} ${Errors}
    !insertmacro SelectSection ${SecUnData}
  ${EndIf}
FunctionEnd

!insertmacro MUI_UNFUNCTION_DESCRIPTION_BEGIN
  !insertmacro MUI_DESCRIPTION_TEXT ${SecUnApp} "The program files in $INSTDIR."
  !insertmacro MUI_DESCRIPTION_TEXT ${SecUnData} "Deletes every run, adapter, GGUF file and the training engine. Leave unticked to keep them for a later install."
!insertmacro MUI_UNFUNCTION_DESCRIPTION_END
